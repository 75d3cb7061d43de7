module github.com/backlog-dev/backlog

go 1.26.8

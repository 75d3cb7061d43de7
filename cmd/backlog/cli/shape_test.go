package cli

import (
	"strings"
	"testing"
)

func TestShapeMisuse(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		mention string
	}{
		{[]string{"shape", "--personality", "linux"}, "--port 0: give the listener's port, 1 to 65535"},
		{[]string{"shape", "--port", "70000", "--personality", "linux"}, "--port 70000"},
		{[]string{"shape", "--port", "8080"}, "--personality is required; valid: winsock1.1,"},
		{[]string{"shape", "--port", "8080", "--personality", "vms"}, `unknown personality "vms"; valid: all,`},
		{[]string{"shape", "--port", "8080", "--personality", "all"}, "--personality takes one system, not all"},
		{[]string{"shape", "--port", "8080", "--personality", "linux", "--addr", "localhost"}, `--addr "localhost": give an IPv4 or IPv6 address`},
		{[]string{"shape", "--port", "8080", "--personality", "linux", "--backlog", "-3"}, "--backlog -3: give 0 (the listener's own) or more"},
		{[]string{"shape", "--port", "8080", "--personality", "linux", "--interval", "-1s"}, "--interval -1s"},
		{[]string{"shape", "--port", "8080", "--personality", "linux", "extra"}, `unexpected argument "extra"`},
		{[]string{"shape", "--port", "eighty"}, `invalid value "eighty" for flag -port`},
	} {
		code, out, errOut := run(t, tt.args...)
		if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tt.mention) || out != "" {
			t.Errorf("backlog %q: exit %d, stderr %q; want exit 2 and one line mentioning %q", tt.args, code, errOut, tt.mention)
		}
	}
}

# A listener that is not ours, for the shaper tests: it listens on
# 127.0.0.1 with the backlog given as its argument, prints its port, and
# accepts one connection for each line on standard input, printing the
# client's port. Accepted connections stay open until the end.
import socket
import sys

s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(int(sys.argv[1]))
print(s.getsockname()[1], flush=True)
held = []
for line in sys.stdin:
    c, addr = s.accept()
    held.append(c)
    print(addr[1], flush=True)

# A TCP client of this host's kernel, for the shaper tests: for each line
# "HOST PORT TIMEOUT" on standard input it connects once and prints what it
# met and how long connect() took. A connected client waits 0.2 s for a
# reset from the server; connections stay open until the end.
import errno
import socket
import sys
import time

held = []
for line in sys.stdin:
    host, port, timeout = line.split()
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(float(timeout))
    start = time.monotonic()
    try:
        s.connect((host, int(port)))
    except ConnectionRefusedError:
        out = "refused"
    except ConnectionResetError:
        out = "reset"
    except (socket.timeout, TimeoutError):
        out = "timeout"
    except OSError as e:
        out = "error:" + errno.errorcode.get(e.errno, str(e.errno))
    else:
        out = "connected"
        s.settimeout(0.2)
        try:
            if s.recv(1) == b"":
                out = "closed"
        except (socket.timeout, TimeoutError):
            pass
        except ConnectionResetError:
            out = "reset"
        held.append(s)
    print(out, "%.3f" % (time.monotonic() - start), flush=True)

"""The admin at `davit console`, for tests/it/manage.rs: runs the command
on a real pseudo-terminal whose slave is its controlling terminal, waits
until WANT shows on the screen, types each of TYPE (a JSON list of strings,
each followed by a wait for the next WANT... see below), then Ctrl-a q.

usage: console.py SPEC -- davit ARGS...
SPEC is JSON: {"steps": [[TEXT_TO_TYPE or null, TEXT_TO_WAIT_FOR], ...],
               "detach": true|false, "timeout": SECONDS}
Prints one JSON object: the screen, the exit code, and the index of the
first step whose text never appeared (null when all did)."""
import fcntl, json, os, select, struct, sys, termios, time

spec = json.loads(sys.argv[1])
argv = sys.argv[sys.argv.index('--') + 1:]
master, slave = os.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 30, 100, 0, 0))
pid = os.fork()
if pid == 0:
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.closerange(3, 1024)
    os.execvp(argv[0], argv)
    os._exit(127)
os.close(slave)

screen = b''
def pump_until(want, t):
    global screen
    start = len(screen)
    end = time.time() + t
    while time.time() < end:
        if want is not None and want.encode() in screen[start:]:
            return True
        r, _, _ = select.select([master], [], [], 0.05)
        if r:
            try:
                screen += os.read(master, 65536)
            except OSError:
                return want is None
    return want is None

failed = None
for i, (typed, want) in enumerate(spec['steps']):
    if typed is not None:
        os.write(master, typed.encode())
    if not pump_until(want, spec.get('timeout', 60)):
        failed = i
        break
if spec.get('detach', True):
    os.write(master, b'\x01q')
code = None
deadline = time.time() + 15
while code is None and time.time() < deadline:
    pump_until(None, 0.1)
    p, status = os.waitpid(pid, os.WNOHANG)
    if p:
        code = os.waitstatus_to_exitcode(status)
if code is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps({'screen': screen.decode('utf-8', 'replace'), 'code': code, 'failed': failed}))

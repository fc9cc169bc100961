"""The admin's terminal, for tests/it/terminal.rs: runs a davit command on
a real pseudo-terminal whose slave is its controlling terminal, as a login
shell would, then plays the admin after it returns.

usage: driver.py MODE OUT -- davit ARGS...
MODE pty: standard input, output and error are the terminal.
MODE stdin: only standard input is; output and error go to the file OUT.
MODE stall: as pty, but nothing is read from the terminal for 3 s.
Prints one JSON object: what the command wrote on the terminal, its exit
code, input found waiting on the terminal afterwards, whether what the
admin then typed arrived, and every process holding the terminal."""
import fcntl, json, os, select, sys, termios, time

mode, out_path = sys.argv[1], sys.argv[2]
argv = sys.argv[sys.argv.index('--') + 1:]
master, slave = os.openpty()
st = os.fstat(slave)
pid = os.fork()
if pid == 0:
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    os.dup2(slave, 0)
    if mode == 'stdin':
        f = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, 1)
        os.dup2(f, 2)
    else:
        os.dup2(slave, 1)
        os.dup2(slave, 2)
    os.closerange(3, 1024)
    os.execvp(argv[0], argv)
    os._exit(127)

screen = b''
def pump(t):
    global screen
    end = time.time() + t
    while time.time() < end:
        r, _, _ = select.select([master], [], [], 0.05)
        if r:
            try:
                screen += os.read(master, 65536)
            except OSError:
                return

if mode == 'stall':
    time.sleep(3)
code = None
deadline = time.time() + 120
while code is None and time.time() < deadline:
    pump(0.1)
    p, status = os.waitpid(pid, os.WNOHANG)
    if p:
        code = os.waitstatus_to_exitcode(status)
if code is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
# The admin is back at the prompt: whatever lingers has 4 s to act.
pump(4)

def pending():
    fl = fcntl.fcntl(slave, fcntl.F_GETFL)
    fcntl.fcntl(slave, fcntl.F_SETFL, fl | os.O_NONBLOCK)
    got = b''
    try:
        while True:
            chunk = os.read(slave, 4096)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    fcntl.fcntl(slave, fcntl.F_SETFL, fl)
    return got

injected = pending()
os.write(master, b'typed-by-admin\n')
pump(0.5)
typed = pending()

holders = []
me = os.getpid()
for p in os.listdir('/proc'):
    if not p.isdigit() or int(p) == me:
        continue
    try:
        for fd in os.listdir(f'/proc/{p}/fd'):
            try:
                s = os.stat(f'/proc/{p}/fd/{fd}')
            except OSError:
                continue
            if s.st_rdev == st.st_rdev and s.st_dev == st.st_dev:
                holders.append(f'{p}:{fd}')
    except OSError:
        pass

print(json.dumps({
    'code': code,
    'screen': screen.decode(errors='replace'),
    'host_tty': f'dev={os.major(st.st_dev)}:{os.minor(st.st_dev)} '
                f'rdev={os.major(st.st_rdev)}:{os.minor(st.st_rdev)}',
    'injected': injected.decode(errors='replace'),
    'typed': typed.decode(errors='replace'),
    'holders': holders,
}))

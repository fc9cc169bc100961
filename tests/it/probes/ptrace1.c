/* Run inside a container by tests/it/run.rs: container root tries to
 * reach into pid 1 (with `start -- CMD`, davit's shim, a fork of the
 * monitor): PTRACE_ATTACH, and opening /proc/1/mem. Static, for busybox. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    if (ptrace(PTRACE_ATTACH, 1, 0, 0) == 0) {
        waitpid(1, 0, __WALL);
        ptrace(PTRACE_DETACH, 1, 0, 0);
        puts("ATTACH-OK");
    } else {
        printf("ATTACH-DENIED %s\n", strerror(errno));
    }
    int fd = open("/proc/1/mem", O_RDONLY);
    if (fd >= 0)
        puts("MEM-OPENED");
    else
        printf("MEM-DENIED %s\n", strerror(errno));
    return 0;
}

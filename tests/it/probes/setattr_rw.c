/* Container root tries to make the read-only bind at argv[1] writable
 * through mount_setattr(2), which a seccomp rule answers with ENOSYS
 * when the container has a read-only host bind (issue 18). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct mount_attr_v0 {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

int main(int argc, char **argv) {
    struct mount_attr_v0 a = {0, 0x1 /* MOUNT_ATTR_RDONLY */, 0, 0};
    if (argc < 2)
        return 2;
    long r = syscall(SYS_mount_setattr, AT_FDCWD, argv[1], 0, &a, sizeof a);
    if (r == 0) {
        puts("SETATTR-RW-OK");
        return 0;
    }
    printf("SETATTR-DENIED %s\n", strerror(errno));
    return 1;
}

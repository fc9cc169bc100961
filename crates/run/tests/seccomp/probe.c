/* Run inside a container by tests/real.rs: the system calls the default
 * seccomp filter refuses, each tried for real in a way whose result tells
 * the filter from the kernel's own checks. One line per call:
 * NAME=ok or NAME=<errno name>. Static, so it runs in busybox. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void show(const char *name, long r) {
    if (r >= 0)
        printf("%s=ok\n", name);
    else
        printf("%s=%s\n", name, strerrorname_np(errno));
}

#if defined(__x86_64__)
/* The i386 ABI from a 64-bit process: a filter for x86-64 alone would
 * judge it by no rule. */
static long int80(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}
#endif

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    show("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
    show("add_key", syscall(SYS_add_key, "user", "davit-probe", "x", 1, KEY_SPEC_SESSION_KEYRING));
    show("request_key", syscall(SYS_request_key, "user", "davit-none", NULL, 0));
#if defined(__x86_64__)
    long r = int80(288 /* i386 keyctl */, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0);
    if (r < 0) {
        errno = -r;
        r = -1;
    }
    show("keyctl32", r);
#endif
    /* A tmpfs of our own, unmounted with MNT_FORCE. */
    mkdir("/tmp/probe-mnt", 0755);
    if (mount("probe", "/tmp/probe-mnt", "tmpfs", 0, NULL) == 0) {
        show("umount_force", umount2("/tmp/probe-mnt", MNT_FORCE));
        umount2("/tmp/probe-mnt", 0);
    } else {
        show("mount_tmpfs", -1);
    }
    /* The Shocker primitive: a handle, opened again without a path. */
    struct {
        struct file_handle fh;
        unsigned char bytes[MAX_HANDLE_SZ];
    } h;
    int mnt_id;
    h.fh.handle_bytes = MAX_HANDLE_SZ;
    if (name_to_handle_at(AT_FDCWD, "/bin/busybox", &h.fh, &mnt_id, 0) == 0) {
        int root = open("/", O_RDONLY | O_DIRECTORY);
        long fd = open_by_handle_at(root, &h.fh, O_RDONLY);
        show("open_by_handle_at", fd);
    } else {
        show("name_to_handle_at", -1);
    }
    /* Bad flags: without the filter the kernel says EINVAL (or ENOSYS
     * without kexec) after its capability check. */
    show("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL));
    static char page[4096];
    show("mlock", mlock(page, sizeof page));
    /* A filter with a notify listener, which would let a supervisor inside
     * answer for the kernel. Last: it stays installed on success. */
    struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {.len = 1, .filter = &allow};
    show("listener", syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                             SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog));
    printf("probe done\n");
    return 0;
}

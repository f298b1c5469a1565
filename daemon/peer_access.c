/*
 * peer_access.c - could a Unix peer read this file itself?
 *
 * A server-side ingest path comes from a local user who asked tomed, which
 * may run with more rights than they have (as root, or as a service user
 * that owns files of its own), to read it.  What tomed reads for them must
 * stay within what they could read: every directory and file of the walk
 * is checked against the peer's credentials, as the kernel would check
 * them, before a byte of it is read.
 *
 * The design: tomed opens each entry with its own rights and then asks
 * here, on the open descriptor (fstat), whether the peer's uid, primary gid
 * and supplementary groups (SO_PEERGROUPS, the groups the peer's process
 * really had when it connected) would have been allowed.  Checking the
 * descriptor rather than a path means a file renamed or replaced between
 * check and read cannot slip past.  Switching credentials instead
 * (setfsuid and per-thread setgroups around each open) would let the kernel
 * decide, ACLs included, but needs CAP_SETUID and CAP_SETGID, which the
 * systemd unit's service user does not have.  So the permission bits are
 * evaluated here the way the kernel does (owner class, else group class,
 * else other, never a union), and an entry carrying a POSIX access ACL,
 * whose bits no longer tell the whole story, is refused unless the peer owns
 * it: a refusal, never a wider grant.  Root peers read everything, as they
 * could themselves.
 */
#include "daemon/auth.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static int in_groups(const tomed_peer *p, gid_t gid)
{
    if (gid == p->gid) return 1;
    for (int i = 0; i < p->n_groups; i++)
        if (p->groups[i] == gid) return 1;
    return 0;
}

/* Does the open file carry a POSIX access ACL?  When that cannot be told,
 * say yes: the caller then refuses. */
static int has_access_acl(int fd)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    /* O_PATH descriptors refuse fgetxattr; their /proc link does not. */
    if (getxattr(proc, "system.posix_acl_access", NULL, 0) >= 0) return 1;
    return errno != ENODATA && errno != ENOTSUP;
}

int tomed_peer_may_open(void *peer, int fd, int want)
{
    const tomed_peer *p = peer;
    struct stat st;
    if (p->uid == 0) return 1;
    if (fstat(fd, &st) != 0) return 0;
    if (st.st_uid != p->uid && has_access_acl(fd)) return 0;
    mode_t bits = (want & R_OK ? S_IROTH : 0) | (want & X_OK ? S_IXOTH : 0);
    if (st.st_uid == p->uid)
        bits <<= 6;
    else if (in_groups(p, st.st_gid))
        bits <<= 3;
    return (st.st_mode & bits) == bits;
}

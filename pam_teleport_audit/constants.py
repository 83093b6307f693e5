"""Numbers and names shared by the PAM module and the helper command.

Values come from <linux/netlink.h>, <linux/audit.h> and libaudit; they are
part of the kernel ABI and never change.
"""

# Netlink (linux/netlink.h)
NETLINK_AUDIT = 9
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

# Audit message types (linux/audit.h)
AUDIT_GET = 1000
AUDIT_USER_ACCT = 1101
AUDIT_USER_START = 1105
AUDIT_USER_END = 1106
AUDIT_USER_LOGIN = 1112
AUDIT_LOGIN = 1006
AUDIT_TTY = 1319

# The kernel refuses user record text longer than this (AUDIT_MESSAGE_TEXT_MAX).
AUDIT_MESSAGE_TEXT_MAX = 8560
# libaudit cuts acct= to the utmp name size (UT_NAMESIZE).
ACCT_MAX_BYTES = 32
# Our caps on the other fields (raw bytes; hex doubles them), so that no field can crowd
# out the identity or res=: with these the text always fits AUDIT_MESSAGE_TEXT_MAX.
EXE_MAX_BYTES = 1024
HOSTNAME_MAX_BYTES = 512  # a DNS name has at most 253
ADDR_MAX_BYTES = 64  # an IPv6 literal has at most 45
TERMINAL_MAX_BYTES = 128
TELEPORT_USER_MAX_BYTES = 2048
# /proc/PID/loginuid and sessionid when unset.
UNSET_ID = 4294967295

# The PAM environment Teleport fills before pam_acct_mgmt (lib/pam).
ENV_TELEPORT_USERNAME = "TELEPORT_USERNAME"
ENV_TELEPORT_LOGIN = "TELEPORT_LOGIN"
ENV_TELEPORT_ROLES = "TELEPORT_ROLES"

# PAM return codes (security/_pam_types.h): the ABI's values, so that a return code never
# depends on a handle that may be the thing failing.
PAM_SUCCESS = 0
PAM_SYSTEM_ERR = 4
PAM_SESSION_ERR = 14
PAM_IGNORE = 25

# PAM_TTY that OpenSSH's sshd sets for every session (auth-pam.c).
SSH_TTY_ITEM = "ssh"

# Operations of our records, one per PAM phase, named like libpam's "PAM:<op>".
OP_ACCOUNTING = "teleport:accounting"
OP_SESSION_OPEN = "teleport:session_open"
OP_SESSION_CLOSE = "teleport:session_close"
# A login refused before its session opened (account stack, pam_authenticate, or the
# session stack before our line): written at pam_end, type USER_LOGIN, res=failed.
OP_LOGIN = "teleport:login"

# errno values (asm-generic/errno.h), so the PAM path need not import errno.
EIO = 5
EPROTO = 71
ETIMEDOUT = 110

# syslog(3) facility and priorities (syslog.h), here so that the PAM path
# imports syslog.py only when it has something to log.
LOG_AUTHPRIV = 10 << 3
LOG_ERR = 3
LOG_WARNING = 4
LOG_INFO = 6

# Name of the Teleport binary trusted when no teleport_exe= option is given.
DEFAULT_TELEPORT_NAME = "teleport"
# What the kernel appends to /proc/PID/exe when the file was replaced or unlinked.
DELETED_SUFFIX = " (deleted)"
MEMFD_PREFIX = "/memfd:"
# The memfd Teleport 18.8+ runs `teleport exec` from (session/reexec/embed_linux.go):
# trusted by default, like a binary named teleport.
DEFAULT_TELEPORT_MEMFD = "memfd:teleport-sessionhelper"
# teleportChild= values: argv[1] of the Teleport child running PAM.
CHILD_EXEC = "exec"
CHILD_NETWORKING = "networking"  # port, agent and X11 forwarding

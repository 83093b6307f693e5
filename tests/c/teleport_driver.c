/*
 * A stand-in for `teleport exec`: the PAM calls Teleport's SSH service makes
 * for a session (gravitational/teleport lib/pam), from C, because a Python
 * process driving a stack that holds pam_python.so crashes.
 *
 *   pam_start(service, login) ; pam_putenv TELEPORT_USERNAME/LOGIN/ROLES ;
 *   pam_acct_mgmt ; pam_open_session ; a shell on a pty that is sent the
 *   typed lines ; pam_close_session ; pam_end.
 * Like Teleport it sets neither PAM_TTY nor PAM_RHOST, and passes flags 0.
 *
 * The tests compile it under the name `teleport`, the name the module trusts.
 *
 * usage: teleport start [ARGS...]
 *        teleport [exec|networking] [-s service] [-u tpuser] [-r roles] [-L tplogin|-]
 *                 [-e NAME=VALUE]... [-R rhost] [-i line]... [-J loginuid] [-n] [-c count] [-S] [-P point]...
 *                 login
 *   start    as `teleport start`, the daemon: run no PAM, wait until stdin is closed. Its children
 *            are then run as Teleport runs `teleport exec`: from /proc/DAEMON/exe, so that their
 *            /proc/self/exe names the daemon's binary, " (deleted)" once an upgrade replaced it
 *   exec, networking  a leading word as Teleport's children have (argv[1]); skipped. Like
 *            `teleport networking` (session/reexec RunNetworking, Teleport 17+), the networking
 *            child then drops root for the login user once open_session succeeded, so that
 *            close_session and pam_end run as that user
 *   -R RHOST  set PAM_RHOST (Teleport never does; for the tests of field bounds)
 *   -A       pam_authenticate after pam_acct_mgmt, as Teleport does with use_pam_auth
 *   -n       no shell: acct_mgmt, open_session, close_session only
 *   -J LOGINUID  the lines are typed into the PTY master by a separate process (it prints
 *            "writer=PID") that first sets its loginuid to LOGINUID (4294967295: unset, as the
 *            teleport daemon's), as Teleport's daemon writes every participant's input, the
 *            owner's and a joined peer's, into the master it holds (lib/srv/sess.go)
 *   -c N     run N whole transactions in this process (prints max RSS)
 *   -S       print each PAM step and its result
 *   -W       wait until stdin is closed before pam_start
 *   -P POINT pause at POINT (repeatable: acct, open, close, end: before pam_acct_mgmt,
 *            pam_open_session, pam_close_session, pam_end): print "pause=POINT" and read one
 *            line from stdin, so that the caller can change the world there (replace this binary)
 *   -2 USER  a second handle in this process, for Teleport user USER, interleaved
 *            with the first (acct 1, acct 2, open 1, open 2, close 2, close 1; no
 *            shell), as a process serving two sessions would: they share one
 *            pam_python interpreter, and must not share an identity
 * Exit: 0 when every PAM call succeeded; 10+PAM code of acct_mgmt, 40+code
 * of open_session, 70+code of close_session, 100+code of authenticate otherwise;
 * 2 on usage errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <pty.h>
#include <pwd.h>
#include <signal.h>
#include <security/pam_appl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITEMS 64

static int null_conv(int n, const struct pam_message **msg, struct pam_response **resp, void *data) {
    (void)n; (void)msg; (void)resp; (void)data;
    return PAM_CONV_ERR; /* Teleport answers no prompts in the account and session stacks */
}

static void pause_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Type each line as a person would, then leave; drain the output as we go. */
static void type_lines(int master, char **lines, int nlines) {
    char buf[4096];
    for (int i = 0; i <= nlines; i++) {
        const char *line = i < nlines ? lines[i] : "exit";
        pause_ms(100);
        while (1) {
            fd_set r; FD_ZERO(&r); FD_SET(master, &r);
            struct timeval tv = {0, 50000};
            if (select(master + 1, &r, NULL, NULL, &tv) <= 0) break;
            if (read(master, buf, sizeof buf) <= 0) break;
        }
        if (write(master, line, strlen(line)) < 0 || write(master, "\n", 1) < 0) break;
    }
}

/* -J: the lines are typed by another process with its own loginuid, as the teleport daemon writes
 * every participant's input (the owner's, a joined peer's) into the PTY master it holds, while the
 * shell that reads the slave is the exec child's. Returns the writer's pid, or -1. */
static pid_t writer_process(int master, char **lines, int nlines, const char *loginuid) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    FILE *f = fopen("/proc/self/loginuid", "w");
    if (!f || fputs(loginuid, f) < 0 || fclose(f) != 0) { perror("writer loginuid"); _exit(127); }
    printf("writer=%d\n", (int)getpid());
    fflush(stdout);
    type_lines(master, lines, nlines);
    _exit(0);
}

static const char *writer_loginuid = NULL;

static int run_shell(const char *login, char **lines, int nlines) {
    struct passwd *pw = getpwnam(login);
    if (!pw) { fprintf(stderr, "no such user %s\n", login); return -1; }
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    if (pid < 0) { perror("forkpty"); return -1; }
    if (pid == 0) {
        if (pw->pw_uid != 0 &&
            (initgroups(pw->pw_name, pw->pw_gid) || setgid(pw->pw_gid) || setuid(pw->pw_uid))) {
            perror("drop privileges");
            _exit(127);
        }
        if (chdir(pw->pw_dir) != 0 && chdir("/") != 0) _exit(127);
        char home[1024], user[256];
        snprintf(home, sizeof home, "HOME=%s", pw->pw_dir);
        snprintf(user, sizeof user, "USER=%s", pw->pw_name);
        char *env[] = {home, user, "PATH=/usr/local/bin:/usr/bin:/bin", "PS1=$ ", "TERM=dumb", NULL};
        execle("/bin/sh", "sh", "-i", (char *)NULL, env);
        _exit(127);
    }
    char buf[4096];
    if (writer_loginuid) {
        pid_t writer = writer_process(master, lines, nlines, writer_loginuid);
        int writer_status = 0;
        if (writer < 0 || waitpid(writer, &writer_status, 0) < 0 || !WIFEXITED(writer_status) ||
            WEXITSTATUS(writer_status) != 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(master);
            return -1;
        }
    } else {
        type_lines(master, lines, nlines);
    }
    while (read(master, buf, sizeof buf) > 0) {}
    int status = 0;
    waitpid(pid, &status, 0);
    close(master);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static int step(int verbose, const char *name, pam_handle_t *pamh, int rc) {
    if (verbose) printf("%s=%d %s\n", name, rc, pam_strerror(pamh, rc));
    return rc;
}

static const char *rhost = NULL;
static const char *pauses[8];
static int npauses = 0;

/* -P: let the caller act at this point of the transaction; go on at a newline or EOF on stdin. */
static void pause_at(const char *point) {
    for (int i = 0; i < npauses; i++) {
        if (strcmp(pauses[i], point) != 0) continue;
        printf("pause=%s\n", point);
        fflush(stdout);
        char c;
        while (read(0, &c, 1) > 0 && c != '\n') {}
        return;
    }
}

static pam_handle_t *start(const char *service, const char *login, const struct pam_conv *conv, const char *tpuser,
                           const char *tplogin, const char *roles, char **env, int nenv) {
    pam_handle_t *pamh = NULL;
    char item[16384];
    int rc = pam_start(service, login, conv, &pamh);
    if (rc != PAM_SUCCESS) { fprintf(stderr, "pam_start: %d\n", rc); exit(3); }
    if (rhost) pam_set_item(pamh, PAM_RHOST, rhost);
    if (tpuser) { snprintf(item, sizeof item, "TELEPORT_USERNAME=%s", tpuser); pam_putenv(pamh, item); }
    if (strcmp(tplogin, "-") != 0) { snprintf(item, sizeof item, "TELEPORT_LOGIN=%s", tplogin); pam_putenv(pamh, item); }
    if (roles) { snprintf(item, sizeof item, "TELEPORT_ROLES=%s", roles); pam_putenv(pamh, item); }
    for (int i = 0; i < nenv; i++) pam_putenv(pamh, env[i]);
    return pamh;
}

/* Two handles alive at once in one process; exit codes as for one (the first failure). */
static int interleaved(int verbose, pam_handle_t *one, pam_handle_t *two) {
    int rc, failed = 0;
    if ((rc = step(verbose, "acct_mgmt.1", one, pam_acct_mgmt(one, 0))) && !failed) failed = 10 + rc;
    if ((rc = step(verbose, "acct_mgmt.2", two, pam_acct_mgmt(two, 0))) && !failed) failed = 10 + rc;
    if ((rc = step(verbose, "open_session.1", one, pam_open_session(one, 0))) && !failed) failed = 40 + rc;
    if ((rc = step(verbose, "open_session.2", two, pam_open_session(two, 0))) && !failed) failed = 40 + rc;
    if ((rc = step(verbose, "close_session.2", two, pam_close_session(two, 0))) && !failed) failed = 70 + rc;
    if ((rc = step(verbose, "close_session.1", one, pam_close_session(one, 0))) && !failed) failed = 70 + rc;
    pam_end(two, PAM_SUCCESS);
    pam_end(one, PAM_SUCCESS);
    return failed;
}

/* RunNetworking: PAM is opened as root, then the process takes the login user's groups, gid and uid. */
static void drop_root(const char *login) {
    struct passwd *pw = getpwnam(login);
    if (!pw) {
        fprintf(stderr, "no user %s\n", login);
        exit(3);
    }
    if (getuid() == pw->pw_uid && getgid() == pw->pw_gid) return;
    if (initgroups(login, pw->pw_gid) || setgid(pw->pw_gid) || setuid(pw->pw_uid)) {
        perror("drop root");
        exit(3);
    }
}

int main(int argc, char **argv) {
    const char *service = "sshd", *tpuser = NULL, *roles = NULL, *tplogin = NULL, *tpuser2 = NULL;
    char *env[MAX_ITEMS], *lines[MAX_ITEMS];
    int nenv = 0, nlines = 0, shell = 1, count = 1, verbose = 0, wait_stdin = 0, authenticate = 0, opt;
    if (argc > 1 && strcmp(argv[1], "start") == 0) { /* the daemon: doctor finds it by its `start` */
        char c;
        while (read(0, &c, 1) > 0) {}
        return 0;
    }
    int networking = argc > 1 && strcmp(argv[1], "networking") == 0;
    /* `teleport exec ...` / `teleport networking ...`: /proc/self/cmdline keeps the word. */
    if (argc > 1 && (strcmp(argv[1], "exec") == 0 || networking)) {
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    while ((opt = getopt(argc, argv, "s:u:r:L:e:R:i:nc:SWA2:P:J:")) != -1) {
        switch (opt) {
        case 's': service = optarg; break;
        case 'u': tpuser = optarg; break;
        case 'r': roles = optarg; break;
        case 'L': tplogin = optarg; break;
        case 'e': if (nenv < MAX_ITEMS) env[nenv++] = optarg; break;
        case 'R': rhost = optarg; break;
        case 'i': if (nlines < MAX_ITEMS) lines[nlines++] = optarg; break;
        case 'n': shell = 0; break;
        case 'c': count = atoi(optarg); break;
        case 'S': verbose = 1; break;
        case 'W': wait_stdin = 1; break;
        case 'A': authenticate = 1; break;
        case '2': tpuser2 = optarg; break;
        case 'P': if (npauses < 8) pauses[npauses++] = optarg; break;
        case 'J': writer_loginuid = optarg; break;
        default: return 2;
        }
    }
    if (optind != argc - 1 || count < 1) {
        fprintf(stderr, "usage: %s [exec|networking] [-s service] [-u tpuser] [-r roles] [-L tplogin|-] "
                        "[-e NAME=VALUE]... [-R rhost] [-i line]... [-J loginuid] [-n] [-c count] [-S] [-W] [-A] [-2 tpuser] "
                        "[-P point]... login\n",
                argv[0]);
        return 2;
    }
    const char *login = argv[optind];
    if (!tplogin) tplogin = login;
    if (verbose) printf("pid=%d\n", (int)getpid());
    if (wait_stdin) { /* let the caller change the world (e.g. unlink this binary) first */
        fflush(stdout);
        char c;
        while (read(0, &c, 1) > 0) {}
    }
    struct pam_conv conv = {null_conv, NULL};
    if (tpuser2)
        return interleaved(verbose, start(service, login, &conv, tpuser, tplogin, roles, env, nenv),
                           start(service, login, &conv, tpuser2, tplogin, roles, env, nenv));
    for (int n = 0; n < count; n++) {
        pam_handle_t *pamh = start(service, login, &conv, tpuser, tplogin, roles, env, nenv);
        int rc;
        pause_at("acct");
        if ((rc = step(verbose, "acct_mgmt", pamh, pam_acct_mgmt(pamh, 0))) != PAM_SUCCESS) {
            pause_at("end");
            pam_end(pamh, rc);
            return 10 + rc;
        }
        if (authenticate && (rc = step(verbose, "authenticate", pamh, pam_authenticate(pamh, 0))) != PAM_SUCCESS) {
            pam_end(pamh, rc);
            return 100 + rc;
        }
        pause_at("open");
        if ((rc = step(verbose, "open_session", pamh, pam_open_session(pamh, 0))) != PAM_SUCCESS) {
            pause_at("end");
            pam_end(pamh, rc);
            return 40 + rc;
        }
        if (networking) drop_root(login);
        if (shell) {
            int shell_rc = run_shell(login, lines, nlines);
            if (verbose) printf("shell=%d\n", shell_rc);
        }
        pause_at("close");
        rc = step(verbose, "close_session", pamh, pam_close_session(pamh, 0));
        pause_at("end");
        pam_end(pamh, rc);
        if (rc != PAM_SUCCESS) return 70 + rc;
    }
    if (count > 1) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("maxrss_kb=%ld\n", ru.ru_maxrss);
    }
    return 0;
}

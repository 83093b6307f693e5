/*
 * Times whole Teleport-like logins, one fresh process each, interleaved
 * across logins: round 1 runs login 1, 2, …, n, then round 2, … so every
 * login shares the same noise. A fresh process per login is what Teleport
 * does (one `teleport exec` child per session), so each login pays
 * pam_python's dlopen, interpreter start and finalisation, as it does in
 * production.
 *
 *   login_timer ROUNDS LOGIN TPUSER DRIVER@SERVICE...
 *
 * Each DRIVER@SERVICE item runs DRIVER -n -s SERVICE -u TPUSER LOGIN (no
 * shell: acct_mgmt, open_session, close_session); the same C driver under
 * different names (teleport, sshd-stand-in) is a Teleport login and a
 * non-Teleport one through the same stack. Prints "DRIVER@SERVICE
 * MICROSECONDS" per login, timed from fork to the child's exit. One untimed
 * warm-up round first. Exits 1 as soon as a login fails, so a broken stack
 * is never timed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LOGINS 64

struct login {
    const char *item; /* DRIVER@SERVICE, as given: the label printed */
    char *driver;
    const char *service;
};

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int run_login(const struct login *it, const char *login, const char *tpuser) {
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return -1; }
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, STDOUT_FILENO);
        execl(it->driver, it->driver, "-n", "-s", it->service, "-u", tpuser, login, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) { perror("waitpid"); return -1; }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

int main(int argc, char **argv) {
    if (argc < 5 || argc - 4 > MAX_LOGINS) {
        fprintf(stderr, "usage: %s ROUNDS LOGIN TPUSER DRIVER@SERVICE... (at most %d)\n", argv[0], MAX_LOGINS);
        return 2;
    }
    int rounds = atoi(argv[1]);
    const char *login = argv[2], *tpuser = argv[3];
    struct login logins[MAX_LOGINS];
    int n = argc - 4;
    for (int i = 0; i < n; i++) {
        const char *item = argv[4 + i];
        const char *at = strrchr(item, '@'); /* service names hold no '@' */
        if (!at || at == item || !at[1]) {
            fprintf(stderr, "%s: not DRIVER@SERVICE\n", item);
            return 2;
        }
        logins[i] = (struct login){item, strndup(item, at - item), at + 1};
    }
    for (int round = -1; round < rounds; round++) { /* round -1: warm-up, not printed */
        for (int i = 0; i < n; i++) {
            double start = now_us();
            int rc = run_login(&logins[i], login, tpuser);
            double took = now_us() - start;
            if (rc != 0) {
                fprintf(stderr, "%s: login failed with exit code %d\n", logins[i].item, rc);
                return 1;
            }
            if (round >= 0) printf("%s %.0f\n", logins[i].item, took);
        }
        fflush(stdout);
    }
    return 0;
}

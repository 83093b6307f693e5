/*
 * Times whole Teleport-like logins, one fresh process each, interleaved
 * across PAM services: round 1 runs service 1, 2, …, n, then round 2, …
 * A fresh process per login is what Teleport does (one `teleport exec`
 * child per session), so each login pays pam_python's dlopen, interpreter
 * start and finalisation, as it does in production.
 *
 *   login_timer ROUNDS DRIVER LOGIN TPUSER SERVICE...
 *
 * Runs DRIVER -n -s SERVICE -u TPUSER LOGIN (no shell: acct_mgmt,
 * open_session, close_session) and prints "SERVICE MICROSECONDS" per login,
 * timed from fork to the child's exit. One untimed warm-up round first.
 * Exits 1 as soon as a login fails, so a broken stack is never timed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int login(const char *driver, const char *login, const char *tpuser, const char *service) {
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return -1; }
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, STDOUT_FILENO);
        execl(driver, driver, "-n", "-s", service, "-u", tpuser, login, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) { perror("waitpid"); return -1; }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s ROUNDS DRIVER LOGIN TPUSER SERVICE...\n", argv[0]);
        return 2;
    }
    int rounds = atoi(argv[1]);
    for (int round = -1; round < rounds; round++) { /* round -1: warm-up, not printed */
        for (int i = 5; i < argc; i++) {
            double start = now_us();
            int rc = login(argv[2], argv[3], argv[4], argv[i]);
            double took = now_us() - start;
            if (rc != 0) {
                fprintf(stderr, "%s: login failed with exit code %d\n", argv[i], rc);
                return 1;
            }
            if (round >= 0) printf("%s %.0f\n", argv[i], took);
        }
        fflush(stdout);
    }
    return 0;
}

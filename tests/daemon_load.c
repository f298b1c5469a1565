/*
 * daemon_load.c - a bounded load generator for tomed, over its Unix socket.
 *
 *   daemon_load SOCKET PID CORPUS CLIENTS IDLE ROUNDS MAX_TOKENS
 *
 * After a warm-up round (worker threads open their store handles and fill
 * their caches lazily, which is not a leak), holds IDLE keep-alive connections open (each
 * proves itself with one health request first), then ROUNDS times starts
 * CLIENTS threads that ask
 * a question about CORPUS at the same moment and wait for the whole answer.
 * Every answer must be a 200 with an "answer"; the idle connections must
 * all still answer afterwards.  It watches the daemon (PID) through /proc:
 * open descriptors must come back to where they started once every
 * connection is closed, and resident memory must not keep growing from one
 * round to the next (the first round warms caches and allocators).
 * Prints the latency percentiles of all answers; exits 1 on any failure.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Resident memory moves with allocator arenas and SQLite page caches even
 * without a leak; a leak of more than ~120 kB per question shows here.
 * (Exact leak checking is LeakSanitizer's: configure --enable-sanitizers.) */
#define RSS_GROWTH_LIMIT_KB (24 * 1024)

static const char *socket_path;
static const char *corpus;
static int max_tokens;
static pthread_barrier_t start_line;

typedef struct result {
    double ms;
    int status;
    int has_answer;
} result;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int connect_daemon(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", socket_path);
    struct timeval tv = {300, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One response with a Content-Length body: the status, the body in `body`
 * (NUL-terminated, at most cap-1 bytes kept). */
static int read_response(int fd, char *body, size_t cap)
{
    char buf[65536];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have == sizeof buf - 1) return -1;
        ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0) return -1;
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1) return -1;
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    if (!cl) return -1;
    size_t length = strtoul(cl + 17, NULL, 10);
    size_t got = have - (size_t)(end + 4 - buf);
    size_t kept = got < cap - 1 ? got : cap - 1;
    memcpy(body, end + 4, kept);
    while (got < length) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return -1;
        size_t take = (size_t)n;
        if (kept + take > cap - 1) take = cap - 1 - kept;
        memcpy(body + kept, buf, take);
        kept += take;
        got += (size_t)n;
    }
    body[kept] = '\0';
    return status;
}

static int health(int fd)
{
    static const char req[] = "GET /v1/health HTTP/1.1\r\nHost: tome\r\n\r\n";
    char body[1024];
    if (send_all(fd, req, sizeof req - 1) != 0) return -1;
    return read_response(fd, body, sizeof body);
}

static void *ask_once(void *arg)
{
    result *res = arg;
    char payload[512], req[1024], body[8192] = "";
    int plen = snprintf(payload, sizeof payload,
                        "{\"question\":\"Where is the parser?\",\"max_tokens\":%d,"
                        "\"stream\":false}",
                        max_tokens);
    int rlen = snprintf(req, sizeof req,
                        "POST /v1/corpora/%s/ask HTTP/1.1\r\nHost: tome\r\n"
                        "Content-Type: application/json\r\nContent-Length: %d\r\n"
                        "Connection: close\r\n\r\n%s",
                        corpus, plen, payload);
    pthread_barrier_wait(&start_line);
    double t0 = now_ms();
    int fd = connect_daemon();
    res->status = -1;
    if (fd >= 0) {
        if (send_all(fd, req, (size_t)rlen) == 0)
            res->status = read_response(fd, body, sizeof body);
        close(fd);
    }
    res->ms = now_ms() - t0;
    res->has_answer = res->status == 200 && strstr(body, "\"answer\":") != NULL;
    if (res->status != 200) fprintf(stderr, "ask: status %d: %.200s\n", res->status, body);
    return NULL;
}

static int count_fds(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static long rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

/* Resident memory once the daemon is quiet after a round: the answers are
 * out before the daemon has freed what they held (and ASan returns freed
 * memory to the system on a timer), so sample until the figure holds
 * still for half a second, 5 s at most, and take the lowest seen. */
static long rss_settle(int pid)
{
    long low = rss_kb(pid);
    int still = 0;
    for (int i = 0; i < 50 && still < 5; i++) {
        usleep(100 * 1000);
        long now = rss_kb(pid);
        still = now >= low ? still + 1 : 0;
        if (now < low) low = now;
    }
    return low;
}

/* The daemon closes its side a moment after we close ours: wait until
 * the count is `want`, or (want < 0) stops changing, for 5 s at most. */
static int fds_settle(int pid, int want)
{
    int n = count_fds(pid);
    for (int i = 0; i < 50 && n != want; i++) {
        usleep(100 * 1000);
        int m = count_fds(pid);
        if (want < 0 && m == n) break;
        n = m;
    }
    return n;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One round: `clients` questions at once; latencies appended. */
static int run_round(int clients, result *res, pthread_t *threads, double *latencies, int *n_lat)
{
    int errors = 0;
    pthread_barrier_init(&start_line, NULL, (unsigned)clients);
    for (int i = 0; i < clients; i++) pthread_create(&threads[i], NULL, ask_once, &res[i]);
    for (int i = 0; i < clients; i++) pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start_line);
    for (int i = 0; i < clients; i++) {
        errors += !res[i].has_answer;
        if (latencies) latencies[(*n_lat)++] = res[i].ms;
    }
    return errors;
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: daemon_load SOCKET PID CORPUS CLIENTS IDLE ROUNDS MAX_TOKENS\n");
        return 2;
    }
    socket_path = argv[1];
    int pid = atoi(argv[2]);
    corpus = argv[3];
    int clients = atoi(argv[4]), idle = atoi(argv[5]), rounds = atoi(argv[6]);
    max_tokens = atoi(argv[7]);
    int failures = 0, n_lat = 0, errors = 0;
    double *latencies = calloc((size_t)clients * (size_t)rounds, sizeof *latencies);
    result *res = calloc((size_t)clients, sizeof *res);
    pthread_t *threads = calloc((size_t)clients, sizeof *threads);
    int *idle_fds = calloc((size_t)idle, sizeof *idle_fds);

    errors += run_round(clients, res, threads, NULL, NULL);
    int fds_before = fds_settle(pid, -1);
    for (int i = 0; i < idle; i++) {
        idle_fds[i] = connect_daemon();
        if (idle_fds[i] < 0 || health(idle_fds[i]) != 200) {
            fprintf(stderr, "idle connection %d: %s\n", i, strerror(errno));
            failures++;
        }
    }
    printf("idle: %d connections held; daemon fds %d -> %d\n", idle, fds_before, count_fds(pid));

    long rss_first = 0, rss_last = 0;
    double wall = 0; /* the rounds' time, without the settling between them */
    for (int round = 0; round < rounds; round++) {
        double t0 = now_ms();
        int bad = run_round(clients, res, threads, latencies, &n_lat);
        errors += bad;
        double ms = now_ms() - t0;
        wall += ms;
        long rss = rss_settle(pid);
        if (round == 0) rss_first = rss;
        rss_last = rss;
        printf("round %d: %d/%d answered in %.0f ms; daemon rss %ld kB, fds %d\n", round + 1,
               clients - bad, clients, ms, rss, count_fds(pid));
    }

    int idle_ok = 0;
    for (int i = 0; i < idle; i++) idle_ok += idle_fds[i] >= 0 && health(idle_fds[i]) == 200;
    for (int i = 0; i < idle; i++)
        if (idle_fds[i] >= 0) close(idle_fds[i]);
    int fds_after = fds_settle(pid, fds_before);

    qsort(latencies, (size_t)n_lat, sizeof *latencies, by_value);
    double p50 = latencies[n_lat * 50 / 100], p95 = latencies[n_lat * 95 / 100];
    double p99 = latencies[n_lat * 99 / 100], max = latencies[n_lat - 1];
    printf("asks: %d answered, %d errors (warm-up included), %.1f answers/s\n", n_lat - errors,
           errors, n_lat / (wall / 1000));
    printf("latency ms: p50 %.0f p95 %.0f p99 %.0f max %.0f\n", p50, p95, p99, max);
    printf("idle connections still answering: %d/%d\n", idle_ok, idle);
    printf("daemon fds: %d before, %d after; rss growth after round 1: %ld kB\n", fds_before,
           fds_after, rss_last - rss_first);
    if (errors) failures++;
    if (idle_ok != idle) {
        fprintf(stderr, "FAIL: %d idle connections were dropped\n", idle - idle_ok);
        failures++;
    }
    if (fds_after != fds_before) {
        fprintf(stderr, "FAIL: the daemon holds %d descriptors more than before\n",
                fds_after - fds_before);
        failures++;
    }
    if (rounds > 1 && rss_last - rss_first > RSS_GROWTH_LIMIT_KB) {
        fprintf(stderr, "FAIL: daemon memory grew %ld kB after the first round\n",
                rss_last - rss_first);
        failures++;
    }
    free(idle_fds);
    free(latencies);
    free(res);
    free(threads);
    return failures ? 1 : 0;
}

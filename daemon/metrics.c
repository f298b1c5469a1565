/*
 * metrics.c - counters, and /metrics in the Prometheus text format.
 *
 * The counters are plain atomics in one global struct: the loop thread,
 * the workers and the engine executor all bump them, and a scrape reads
 * them without stopping anyone.  Rates (tokens per second) are the last
 * job's or answer's, which is what an operator watching a dashboard wants;
 * totals let Prometheus compute its own rates.
 */
#include "daemon/conf.h"
#include "daemon/metrics.h"

#include <dirent.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <sys/stat.h>

tomed_metrics tomed_stats;

static const char *const transport_names[] = {"unix", "tls"};
static const char *const job_states[] = {"queued", "running", "done", "failed", "canceled"};

static long long file_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

/* Bytes of the regular files directly in `dir` (the state layout is flat). */
static long long dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    long long total = 0;
    struct dirent *e;
    char path[TOMED_PATH_MAX + 256];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        total += file_bytes(path);
    }
    closedir(d);
    return total;
}

static void counter_header(struct evbuffer *out, const char *name, const char *type,
                           const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void tomed_metrics_render(struct evbuffer *out, const char *state_dir, const int jobs_by_state[5])
{
    counter_header(out, "tome_requests_total", "counter", "Requests answered.");
    for (int t = 0; t < 2; t++)
        for (int k = 1; k < 6; k++)
            evbuffer_add_printf(out, "tome_requests_total{transport=\"%s\",status=\"%dxx\"} %llu\n",
                                transport_names[t], k,
                                (unsigned long long)tomed_stats.requests[t][k]);
    counter_header(out, "tome_errors_total", "counter", "Error answers by code.");
    for (int i = 1; i <= TOME_ERROR_CODES; i++)
        evbuffer_add_printf(out, "tome_errors_total{code=\"%s\"} %llu\n", tome_error_name(-i),
                            (unsigned long long)tomed_stats.errors[i]);
    counter_header(out, "tome_connections", "gauge", "Open connections.");
    evbuffer_add_printf(out, "tome_connections %d\n", (int)tomed_stats.connections);
    counter_header(out, "tome_jobs", "gauge", "Jobs by state.");
    for (int i = 0; i < 5; i++)
        evbuffer_add_printf(out, "tome_jobs{state=\"%s\"} %d\n", job_states[i], jobs_by_state[i]);
    counter_header(out, "tome_prefill_tokens_total", "counter", "Tokens prefilled.");
    evbuffer_add_printf(out, "tome_prefill_tokens_total %llu\n",
                        (unsigned long long)tomed_stats.prefill_tokens);
    counter_header(out, "tome_prefill_tokens_per_second", "gauge", "Rate of the last prefill.");
    evbuffer_add_printf(out, "tome_prefill_tokens_per_second %.3f\n",
                        (double)tomed_stats.prefill_tokens_per_s);
    counter_header(out, "tome_decode_tokens_total", "counter", "Tokens generated.");
    evbuffer_add_printf(out, "tome_decode_tokens_total %llu\n",
                        (unsigned long long)tomed_stats.decode_tokens);
    counter_header(out, "tome_decode_tokens_per_second", "gauge", "Rate of the last answer.");
    evbuffer_add_printf(out, "tome_decode_tokens_per_second %.3f\n",
                        (double)tomed_stats.decode_tokens_per_s);
    counter_header(out, "tome_cache_hits_total", "counter", "Asks that found a cached state.");
    evbuffer_add_printf(out, "tome_cache_hits_total %llu\n",
                        (unsigned long long)tomed_stats.cache_hits);
    counter_header(out, "tome_cache_misses_total", "counter", "Asks without a cached state.");
    evbuffer_add_printf(out, "tome_cache_misses_total %llu\n",
                        (unsigned long long)tomed_stats.cache_misses);
    counter_header(out, "tome_cached_prompt_tokens_total", "counter",
                   "Prompt tokens served from the engine's cache.");
    evbuffer_add_printf(out, "tome_cached_prompt_tokens_total %llu\n",
                        (unsigned long long)tomed_stats.cached_tokens);
    counter_header(out, "tome_remote_rewarms_total", "counter",
                   "Corpora warmed again on another replica for a question.");
    evbuffer_add_printf(out, "tome_remote_rewarms_total %llu\n",
                        (unsigned long long)tomed_stats.remote_rewarms);
    counter_header(out, "tome_queue_depth", "gauge", "Questions waiting for the engine.");
    evbuffer_add_printf(out, "tome_queue_depth %d\n", (int)tomed_stats.queue_depth);
    char path[TOMED_PATH_MAX + 32];
    counter_header(out, "tome_disk_bytes", "gauge", "Bytes used under the state directory.");
    snprintf(path, sizeof path, "%s/tome.db", state_dir);
    long long db = file_bytes(path);
    snprintf(path, sizeof path, "%s/tome.db-wal", state_dir);
    db += file_bytes(path);
    evbuffer_add_printf(out, "tome_disk_bytes{kind=\"db\"} %lld\n", db);
    snprintf(path, sizeof path, "%s/kv", state_dir);
    evbuffer_add_printf(out, "tome_disk_bytes{kind=\"kv\"} %lld\n", dir_bytes(path));
    snprintf(path, sizeof path, "%s/tmp", state_dir);
    evbuffer_add_printf(out, "tome_disk_bytes{kind=\"tmp\"} %lld\n", dir_bytes(path));
}

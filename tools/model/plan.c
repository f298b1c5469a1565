/*
 * plan.c - `tome-model plan MODEL`: the fit check of plan/plan.h, printed.
 *
 * MODEL is a model directory or a config.json (a published one works
 * before any download).  The machine's RAM and free disk come from the
 * kernel, its read bandwidth and FMA peak are measured (plan/limits.h),
 * and its disk read speed is measured by reading the largest weights file
 * of MODEL when there is one.  Every machine figure may be given instead
 * (--ram, --free-disk, --bandwidth, --gflops, --disk-speed), so a plan for
 * another machine can be printed here; --no-measure skips the timings.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/options.h"
#include "plan/limits.h"
#include "plan/plan.h"
#include "tools/model/model.h"

#define BANDWIDTH_BUFFER  ((size_t)256 << 20)
#define DISK_READ_MAX     ((size_t)512 << 20)
#define DISK_READ_SECONDS 2.0

typedef struct plan_options {
    int64_t context;
    int questions, threads, no_measure;
    uint64_t ram, free_disk;
    double bandwidth_gbs, gflops, disk_mbs;
    const char *state_dir, *kernels, *numerics;
} plan_options;

/* The config.json of MODEL, and the directory whose disk counts. */
static int locate(const char *model, char *config, size_t cap, char *dir, size_t dcap,
                  tome_error *err)
{
    struct stat st;
    if (stat(model, &st) != 0)
        return tome_errorf(err, TOME_ENOTFOUND, "%s: %s", model, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        snprintf(config, cap, "%s/config.json", model);
        snprintf(dir, dcap, "%s", model);
        return 0;
    }
    snprintf(config, cap, "%s", model);
    const char *slash = strrchr(model, '/');
    if (slash)
        snprintf(dir, dcap, "%.*s", (int)(slash - model), model);
    else
        snprintf(dir, dcap, ".");
    if (!*dir) snprintf(dir, dcap, "/");
    return 0;
}

/* The largest *.safetensors file of `dir` (empty when none). */
static void largest_weights(const char *dir, char *path, size_t cap)
{
    *path = '\0';
    DIR *d = opendir(dir);
    if (!d) return;
    off_t best = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0) continue;
        char p[4096];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > best) {
            best = st.st_size;
            snprintf(path, cap, "%s", p);
        }
    }
    closedir(d);
}

/* Bytes/s reading `path` from its start, after asking the kernel to drop
 * its cached pages (a file still cached reads at memory speed: the figure
 * is then optimistic, which an upper bound may be).  0 when unreadable. */
static double disk_read_speed(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    char *buf = malloc((size_t)1 << 20);
    double t0 = tome_now(), bytes = 0;
    ssize_t got = 1;
    while (buf && got > 0 && bytes < (double)DISK_READ_MAX && tome_now() - t0 < DISK_READ_SECONDS) {
        got = read(fd, buf, (size_t)1 << 20);
        if (got > 0) bytes += (double)got;
    }
    double seconds = tome_now() - t0;
    free(buf);
    close(fd);
    return seconds > 0 && bytes > 0 ? bytes / seconds : 0;
}

/* Fill what was not given on the command line. */
static int machine_of(const plan_options *o, const char *dir, tome_machine *m, tome_error *err)
{
    int rc = tome_machine_probe(o->state_dir ? o->state_dir : dir, m, err);
    if (rc) return rc;
    if (o->ram) m->ram = (double)o->ram;
    if (o->free_disk) m->free_disk = (double)o->free_disk;
    m->read_bw = o->bandwidth_gbs * 1e9;
    m->flops = o->gflops * 1e9;
    m->disk_read = o->disk_mbs * 1e6;
    if (o->no_measure) return 0;
    if (m->read_bw == 0)
        rc = tome_limit_measure(TOME_LIMIT_READ_BW, o->threads, BANDWIDTH_BUFFER, &m->read_bw, err);
    if (rc == 0 && m->flops == 0) rc = tome_limit_fma_peak(o->threads, &m->flops, err);
    if (rc == 0 && m->disk_read == 0) {
        char weights[4096];
        largest_weights(dir, weights, sizeof weights);
        if (*weights) m->disk_read = disk_read_speed(weights);
    }
    return rc;
}

/* The options the model would be opened with: --kernels, --numerics. */
static int open_options(const plan_options *o, v4_open_options *opts, tome_error *err)
{
    int kernels = o->kernels ? v4_kernels_parse(o->kernels) : V4_KERNELS_FAST;
    int numerics = o->numerics ? v4_numerics_parse(o->numerics) : V4_NUMERICS_QAT;
    if (kernels < 0)
        return tome_errorf(err, TOME_EINVAL, "--kernels %s: expected fast or exact", o->kernels);
    if (numerics < 0)
        return tome_errorf(err, TOME_EINVAL, "--numerics %s: expected qat, fp32 or official",
                           o->numerics);
    opts->kernels = (v4_kernels)kernels;
    opts->numerics = (v4_numerics)numerics;
    return 0;
}

static void print_line(void *ctx, const char *line)
{
    fprintf((FILE *)ctx, "%s\n", line);
}

static int run_plan(const plan_options *o, const char *model, tome_error *err)
{
    char config[4096], dir[4096];
    char *text = NULL;
    size_t len = 0;
    v4_config cfg;
    tome_machine m = {0};
    tome_plan p;
    int rc = locate(model, config, sizeof config, dir, sizeof dir, err);
    if (rc == 0) rc = tome_read_file(config, 16u << 20, &text, &len, err);
    if (rc == 0) rc = v4_config_parse(text, len, config, &cfg, err);
    free(text);
    v4_open_options opts = {0};
    if (rc == 0) rc = open_options(o, &opts, err);
    if (rc == 0) rc = machine_of(o, dir, &m, err);
    if (rc == 0)
        rc = tome_plan_make(&cfg, &opts, o->context ? o->context : cfg.max_position, o->questions,
                            &m, &p, err);
    if (rc) return rc;
    printf("model        %s\n", config);
    tome_plan_report(&p, &m, print_line, stdout);
    return 0;
}

int model_plan_main(int argc, char **argv)
{
    plan_options o = {.questions = 1, .threads = (int)sysconf(_SC_NPROCESSORS_ONLN)};
    const tome_option options[] = {
        TOME_SIZE("context", 'c', "N", o.context, 1, INT64_MAX,
                  "tokens per question (default: the model's max_position_embeddings)"),
        TOME_INT("questions", 'q', "Q", o.questions, 1, 1 << 20,
                 "concurrent questions, each over its own corpus (default 1)"),
        TOME_SIZE("ram", 0, "SIZE", o.ram, 1, INT64_MAX,
                  "plan for this much RAM (default: this machine's)"),
        TOME_SIZE("free-disk", 0, "SIZE", o.free_disk, 1, INT64_MAX,
                  "plan for this much free disk (default: the state directory's)"),
        TOME_STRING("state-dir", 0, "DIR", o.state_dir,
                    "the directory whose free disk counts (default: MODEL's)"),
        TOME_REAL("bandwidth", 0, "GB/s", o.bandwidth_gbs, 0, 1e6,
                  "memory read bandwidth (default: measured)"),
        TOME_REAL("gflops", 0, "GFLOP/s", o.gflops, 0, 1e9, "FP32 FMA peak (default: measured)"),
        TOME_REAL("disk-speed", 0, "MB/s", o.disk_mbs, 0, 1e9,
                  "disk read speed (default: measured on MODEL's largest weights file)"),
        TOME_STRING("kernels", 0, "fast|exact", o.kernels,
                    "the kernels the model would run (default fast; exact adds its panels)"),
        TOME_STRING("numerics", 0, "qat|fp32|official", o.numerics,
                    "the numerics it would run (default qat; sizes the KV state)"),
        TOME_INT("threads", 't', "N", o.threads, 1, 4096, "threads for the measurements"),
        TOME_FLAG("no-measure", 0, o.no_measure, "measure nothing; speeds only where given"),
    };
    const tome_cli cli = {.program = "tome-model plan",
                          .usage = "MODEL [options]",
                          .options = options,
                          .n_options = sizeof options / sizeof options[0]};
    int status;
    if (model_parse(&cli, argc, argv, 1, &status) != 0) return status;
    tome_error err = {0};
    if (run_plan(&o, argv[1], &err) != 0) {
        fprintf(stderr, "tome-model plan: %s\n", err.msg);
        return 1;
    }
    return 0;
}

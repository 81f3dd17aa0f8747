/*
 * bench/report.c -- what seqk-bench writes: progress lines and errors on
 * stderr, aligned tables on stdout, and one record per measurement in
 * OUT/seqk-bench.jsonl (JSON lines) and OUT/seqk-bench.csv (same columns).
 *
 * The columns are listed once, in record_fields(); JSON and CSV are both
 * written from that list, so they cannot drift apart.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- run state -------------------------------------------------------------- */

static bench_meta g_meta;
static FILE *g_json, *g_csv;
static const char *g_out_dir;
static bench_record *g_records; /* [g_n_records] everything reported, for the tables */
static int g_n_records, g_cap_records;
static bool g_progress_open; /* a progress line waits for its end on stderr */

/* ---- errors and progress ------------------------------------------------------ */

static void close_progress_line(void)
{
    if (g_progress_open) fputc('\n', stderr);
    g_progress_open = false;
}

void bench_die(const char *fmt, ...)
{
    close_progress_line();
    va_list ap;
    va_start(ap, fmt);
    fputs("seqk-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void bench_check(seqk_status st, const char *what_fmt, ...)
{
    if (st == SEQK_SUCCESS) return;
    close_progress_line();
    va_list ap;
    va_start(ap, what_fmt);
    fputs("seqk-bench: ", stderr);
    vfprintf(stderr, what_fmt, ap);
    va_end(ap);
    fprintf(stderr, " failed: %s: %s\n", seqk_status_string(st), seqk_last_error());
    exit(1);
}

void progress_begin(bench_progress *pg, const char *suite, const char *name,
                    const char *backend)
{
    close_progress_line();
    pg->step++;
    fprintf(stderr, "[%d/%d] %s %s %s ...", pg->step, pg->total, suite, name, backend);
    fflush(stderr);
    g_progress_open = true;
}

void progress_end(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputc(' ', stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    g_progress_open = false;
}

/* ---- records -------------------------------------------------------------------- */

bench_record bench_record_init(const char *kind)
{
    bench_record r;
    memset(&r, 0, sizeof r);
    r.kind = kind;
    r.suite = r.name = r.backend = "";
    r.shape.mode = "";
    r.bound = r.bound_unit = "";
    r.fraction = -1.0;
    r.check = "-";
    return r;
}

void bench_record_derive(bench_record *rec, const bench_backend *be)
{
    const double t = rec->stats.median_s;
    rec->gb_per_s = t > 0.0 ? rec->bytes / t / 1e9 : 0.0;
    rec->gflop_per_s = t > 0.0 ? rec->flops / t / 1e9 : 0.0;
    rec->tokens_per_s = t > 0.0 ? rec->tokens / t : 0.0;
    rec->bwd_over_fwd = rec->paired_ratio > 0.0                   ? rec->paired_ratio
                        : t > 0.0 && rec->forward_s > 0.0 ? t / rec->forward_s
                                                          : 0.0;
    rec->bound_unit = "";
    rec->bound_value = 0.0;
    rec->fraction = -1.0;
    const bench_ceiling *c = rec->bound[0] ? bench_get_ceiling(be, rec->bound) : NULL;
    if (!c) return;
    rec->bound_unit = c->unit;
    rec->bound_value = c->value;
    const double achieved = strcmp(c->unit, "GFLOP/s") == 0 ? rec->gflop_per_s : rec->gb_per_s;
    if (c->value > 0.0 && t > 0.0) rec->fraction = achieved / c->value;
}

/* One column of a record: its key and its value as text. */
typedef enum { FIELD_STRING, FIELD_NUMBER, FIELD_NULL } field_kind;
typedef struct field {
    const char *key;
    field_kind kind;
    char text[512];
} field;

#define MAX_FIELDS 48

static void put_str(field *f, int *n, const char *key, const char *value)
{
    f[*n].key = key;
    f[*n].kind = FIELD_STRING;
    snprintf(f[*n].text, sizeof f[*n].text, "%s", value);
    (*n)++;
}

static void put_int(field *f, int *n, const char *key, int64_t value)
{
    f[*n].key = key;
    f[*n].kind = FIELD_NUMBER;
    snprintf(f[*n].text, sizeof f[*n].text, "%lld", (long long)value);
    (*n)++;
}

/* A number printed with fmt ("%.0f" for counts, "%.9g" for times, "%.6g" for
 * rates), or null when !valid (JSON has no NaN). */
static void put_num(field *f, int *n, const char *key, const char *fmt, double value,
                    bool valid)
{
    f[*n].key = key;
    f[*n].kind = valid && isfinite(value) ? FIELD_NUMBER : FIELD_NULL;
    snprintf(f[*n].text, sizeof f[*n].text, fmt, value);
    (*n)++;
}

/* The columns, in order. Returns their count. */
static int record_fields(const bench_record *r, field *f)
{
    /* Times and rates exist only for a timed record (not a skip, a ceiling
     * that was not measured, or a summary). */
    const bool timed = strcmp(r->kind, "skipped") != 0 && r->stats.repeats > 0;
    int n = 0;
    put_str(f, &n, "record", r->kind);
    put_str(f, &n, "suite", r->suite);
    put_str(f, &n, "case", r->name);
    put_str(f, &n, "backend", r->backend);
    put_int(f, &n, "device", r->device);
    put_int(f, &n, "threads", r->threads);
    put_int(f, &n, "B", r->shape.B);
    put_int(f, &n, "T", r->shape.T);
    put_int(f, &n, "H", r->shape.H);
    put_int(f, &n, "K", r->shape.K);
    put_int(f, &n, "V", r->shape.V);
    put_int(f, &n, "C", r->shape.C);
    put_int(f, &n, "block", r->shape.block);
    put_int(f, &n, "N", r->shape.N);
    put_int(f, &n, "varlen", r->shape.varlen);
    put_str(f, &n, "mode", r->shape.mode);
    /* computed sizes ("memory" records) have bytes without timings */
    put_num(f, &n, "flops", "%.0f", r->flops, timed);
    put_num(f, &n, "bytes", "%.0f", r->bytes, timed || r->bytes > 0.0);
    put_int(f, &n, "warmup", r->stats.warmup);
    put_int(f, &n, "repeats", r->stats.repeats);
    put_int(f, &n, "calls_per_repeat", r->stats.calls_per_repeat);
    put_num(f, &n, "median_s", "%.9g", r->stats.median_s, timed);
    put_num(f, &n, "min_s", "%.9g", r->stats.min_s, timed);
    put_num(f, &n, "max_s", "%.9g", r->stats.max_s, timed);
    put_num(f, &n, "gb_per_s", "%.6g", r->gb_per_s, timed);
    put_num(f, &n, "gflop_per_s", "%.6g", r->gflop_per_s, timed);
    put_num(f, &n, "tokens", "%.0f", r->tokens, timed && r->tokens > 0.0);
    put_num(f, &n, "tokens_per_s", "%.6g", r->tokens_per_s, timed && r->tokens > 0.0);
    put_str(f, &n, "bound", r->bound);
    put_str(f, &n, "bound_unit", r->bound_unit);
    put_num(f, &n, "bound_value", "%.6g", r->bound_value, timed && r->bound_value > 0.0);
    put_num(f, &n, "fraction", "%.6g", r->fraction, timed && r->fraction >= 0.0);
    put_str(f, &n, "check", r->check);
    put_num(f, &n, "crossing", "%.6g", r->crossing, r->crossing > 0.0);
    /* a backward's record: its parallel forward's median and the time ratio */
    put_num(f, &n, "forward_s", "%.9g", r->forward_s, timed && r->forward_s > 0.0);
    put_num(f, &n, "bwd_over_fwd", "%.6g", r->bwd_over_fwd, timed && r->bwd_over_fwd > 0.0);
    /* the paired repeats' first and third quartiles of that ratio (null: not paired) */
    put_num(f, &n, "bwd_over_fwd_q1", "%.6g", r->paired_q1, timed && r->paired_ratio > 0.0);
    put_num(f, &n, "bwd_over_fwd_q3", "%.6g", r->paired_q3, timed && r->paired_ratio > 0.0);
    /* and its own targets (null: none) */
    put_num(f, &n, "target_bwd_over_fwd", "%.6g", r->target_bwd_over_fwd,
            r->target_bwd_over_fwd > 0.0);
    put_num(f, &n, "target_fraction", "%.6g", r->target_fraction, r->target_fraction > 0.0);
    put_str(f, &n, "note", r->note);
    put_str(f, &n, "seqk_version", g_meta.version);
    put_str(f, &n, "date", g_meta.date);
    put_str(f, &n, "hostname", g_meta.hostname);
    put_str(f, &n, "cpu_model", g_meta.cpu_model);
    return n;
}

static void write_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void write_csv_string(FILE *out, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (const char *p = s; *p; p++) {
        if (*p == '"') fputc('"', out);
        fputc(*p, out);
    }
    fputc('"', out);
}

static void write_json(FILE *out, const field *f, int n)
{
    fputc('{', out);
    for (int i = 0; i < n; i++) {
        if (i) fputc(',', out);
        write_json_string(out, f[i].key);
        fputc(':', out);
        if (f[i].kind == FIELD_STRING)
            write_json_string(out, f[i].text);
        else
            fputs(f[i].kind == FIELD_NULL ? "null" : f[i].text, out);
    }
    fputs("}\n", out);
}

static void write_csv(FILE *out, const field *f, int n, bool header)
{
    for (int i = 0; i < n; i++) {
        if (i) fputc(',', out);
        if (header)
            write_csv_string(out, f[i].key);
        else if (f[i].kind == FIELD_STRING)
            write_csv_string(out, f[i].text);
        else if (f[i].kind == FIELD_NUMBER)
            fputs(f[i].text, out);
    }
    fputc('\n', out);
}

void report_record(const bench_record *rec)
{
    field f[MAX_FIELDS];
    const int n = record_fields(rec, f);
    write_json(g_json, f, n);
    write_csv(g_csv, f, n, false);
    if (fflush(g_json) || fflush(g_csv))
        bench_die("cannot write to %s/seqk-bench.{jsonl,csv}: %s", g_out_dir, strerror(errno));
    if (g_n_records == g_cap_records) {
        g_cap_records = g_cap_records ? 2 * g_cap_records : 64;
        g_records = realloc(g_records, (size_t)g_cap_records * sizeof *g_records);
        if (!g_records) bench_die("cannot allocate the record list");
    }
    g_records[g_n_records++] = *rec;
}

/* ---- metadata and files ---------------------------------------------------------- */

static void read_cpu_model(char *out, size_t size)
{
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *colon = strchr(line, ':');
        if (!colon) continue;
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(out, size, "%s", v);
        out[strcspn(out, "\r\n")] = '\0';
        break;
    }
    fclose(f);
}

/* mkdir -p */
static void make_dirs(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        bench_die("--out %s: path too long", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            bench_die("cannot create directory %s: %s", path, strerror(errno));
        *p = '/';
    }
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        bench_die("cannot create directory %s: %s", path, strerror(errno));
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        bench_die("--out %s is not a directory", dir);
}

static FILE *open_output(const char *dir, const char *name)
{
    char path[4096 + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) bench_die("cannot open %s for writing: %s", path, strerror(errno));
    return f;
}

void report_open(const bench_options *opt, bench_meta *meta)
{
    snprintf(g_meta.version, sizeof g_meta.version, "%s", seqk_version());
    const time_t now = time(NULL);
    struct tm utc;
    gmtime_r(&now, &utc);
    strftime(g_meta.date, sizeof g_meta.date, "%Y-%m-%dT%H:%M:%SZ", &utc);
    if (gethostname(g_meta.hostname, sizeof g_meta.hostname) != 0)
        snprintf(g_meta.hostname, sizeof g_meta.hostname, "unknown");
    g_meta.hostname[sizeof g_meta.hostname - 1] = '\0';
    read_cpu_model(g_meta.cpu_model, sizeof g_meta.cpu_model);
    *meta = g_meta;

    g_out_dir = opt->out_dir;
    make_dirs(opt->out_dir);
    g_json = open_output(opt->out_dir, "seqk-bench.jsonl");
    g_csv = open_output(opt->out_dir, "seqk-bench.csv");
    field f[MAX_FIELDS];
    const bench_record empty = bench_record_init("");
    write_csv(g_csv, f, record_fields(&empty, f), true);
}

void report_close(void)
{
    if (g_json && fclose(g_json) != 0) bench_die("cannot close seqk-bench.jsonl: %s", strerror(errno));
    if (g_csv && fclose(g_csv) != 0) bench_die("cannot close seqk-bench.csv: %s", strerror(errno));
    g_json = g_csv = NULL;
    free(g_records);
    g_records = NULL;
    g_n_records = g_cap_records = 0;
}

/* ---- aligned tables ------------------------------------------------------------- */

#define TABLE_MAX_COLS 16
#define TABLE_CELL 160

typedef struct table_row {
    char cell[TABLE_MAX_COLS][TABLE_CELL];
} table_row;

typedef struct table {
    int n_cols;
    const char *head[TABLE_MAX_COLS];
    bool right[TABLE_MAX_COLS]; /* right-aligned (numbers) */
    table_row *rows;            /* [n_rows] */
    int n_rows;
} table;

static void table_print(FILE *f, const table *t)
{
    int width[TABLE_MAX_COLS];
    for (int c = 0; c < t->n_cols; c++) {
        width[c] = (int)strlen(t->head[c]);
        for (int r = 0; r < t->n_rows; r++) {
            const int w = (int)strlen(t->rows[r].cell[c]);
            if (w > width[c]) width[c] = w;
        }
    }
    for (int r = -1; r < t->n_rows; r++) {
        for (int c = 0; c < t->n_cols; c++) {
            const char *s = r < 0 ? t->head[c] : t->rows[r].cell[c];
            const bool last = c == t->n_cols - 1;
            if (t->right[c])
                fprintf(f, "%*s", width[c], s);
            else
                fprintf(f, "%-*s", last ? 0 : width[c], s);
            if (!last) fputs("  ", f);
        }
        fputc('\n', f);
        if (r < 0) {
            for (int c = 0; c < t->n_cols; c++) {
                for (int i = 0; i < width[c]; i++) fputc('-', f);
                if (c < t->n_cols - 1) fputs("  ", f);
            }
            fputc('\n', f);
        }
    }
}

/* "B=1 T=4096 C=8192 block=1 reverse": the dimensions the op has. */
static void format_shape(const bench_shape *s, char *out, size_t size)
{
    const struct { const char *name; int64_t v; } dims[] = {
        {"B", s->B}, {"T", s->T}, {"H", s->H}, {"K", s->K}, {"V", s->V},
        {"C", s->C}, {"block", s->block}, {"N", s->varlen ? s->N : 0},
    };
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof dims / sizeof dims[0] && len < size; i++)
        if (dims[i].v)
            len += (size_t)snprintf(out + len, size - len, "%s%s=%lld", len ? " " : "",
                                    dims[i].name, (long long)dims[i].v);
    if (s->varlen && len < size) len += (size_t)snprintf(out + len, size - len, " varlen");
    if (s->mode[0] && strcmp(s->mode, "forward") != 0 && len < size)
        snprintf(out + len, size - len, "%s%s", len ? " " : "", s->mode);
    if (!out[0]) snprintf(out, size, "-");
}

#define CELL(row, c, ...) snprintf((row)->cell[c], TABLE_CELL, __VA_ARGS__)

/* Ends cell text that did not fit with "..." (the JSON and CSV keep it whole). */
static void cell_note(char *cell, const char *note)
{
    const size_t n = strlen(note);
    if (n < TABLE_CELL) {
        memcpy(cell, note, n + 1);
        return;
    }
    memcpy(cell, note, TABLE_CELL - 4);
    memcpy(cell + TABLE_CELL - 4, "...", 4);
}

void report_print_tables(FILE *f)
{
    const size_t n_rows = g_n_records > 0 ? (size_t)g_n_records : 1;
    table_row *rows = calloc(n_rows, sizeof *rows);
    if (!rows) bench_die("cannot allocate the table");

    /* Ceilings: the kernels and the ceiling each backend takes from them. */
    table ceil = {10,
                  {"backend", "ceiling", "threads", "per call", "median ms", "min ms", "max ms",
                   "rate", "of ceiling", "note"},
                  {false, false, true, true, true, true, true, true, true, false},
                  rows,
                  0};
    for (int i = 0; i < g_n_records; i++) {
        const bench_record *r = &g_records[i];
        if (strcmp(r->suite, "ceilings") != 0) continue;
        const bool is_ceiling = strcmp(r->kind, "ceiling") == 0;
        const bool timed = r->stats.repeats > 0;
        const bool flop = r->flops > 0.0 || strcmp(r->bound_unit, "GFLOP/s") == 0;
        table_row *row = &ceil.rows[ceil.n_rows++];
        CELL(row, 0, "%s", r->backend);
        CELL(row, 1, "%s%s", r->name, is_ceiling ? " (ceiling)" : "");
        CELL(row, 2, "%d", r->threads);
        if (!timed) {
            for (int c = 3; c < 9; c++) CELL(row, c, "-");
        } else {
            if (flop)
                CELL(row, 3, "%.3f GFLOP", r->flops / 1e9);
            else
                CELL(row, 3, "%.1f MB", r->bytes / 1e6);
            CELL(row, 4, "%.3f", r->stats.median_s * 1e3);
            CELL(row, 5, "%.3f", r->stats.min_s * 1e3);
            CELL(row, 6, "%.3f", r->stats.max_s * 1e3);
            if (flop)
                CELL(row, 7, "%.2f GFLOP/s", r->gflop_per_s);
            else
                CELL(row, 7, "%.2f GB/s", r->gb_per_s);
            if (r->fraction >= 0.0)
                CELL(row, 8, "%.2f", r->fraction);
            else
                CELL(row, 8, "-");
        }
        /* The kernels' notes repeat in their ceiling's row: show them once. */
        if (is_ceiling || !timed)
            cell_note(row->cell[9], r->note);
        else
            CELL(row, 9, "%s", "");
    }
    if (ceil.n_rows) {
        fputs("\nCeilings (copy: bytes read + written per median second; sgemm: 2MNK flops "
              "per median second)\n",
              f);
        table_print(f, &ceil);
    }

    /* Suites: one row per measurement. */
    table res = {15,
                 {"suite", "case", "backend", "thr", "shape", "MB/call", "median ms", "min ms",
                  "max ms", "GB/s", "GFLOP/s", "Mtok/s", "bound", "frac", "note"},
                 {false, false, false, true, false, true, true, true, true, true, true, true,
                  false, true, false},
                 rows,
                 0};
    memset(rows, 0, n_rows * sizeof *rows);
    for (int i = 0; i < g_n_records; i++) {
        const bench_record *r = &g_records[i];
        if (strcmp(r->suite, "ceilings") == 0 || strcmp(r->kind, "measurement") != 0) continue;
        table_row *row = &res.rows[res.n_rows++];
        CELL(row, 0, "%s", r->suite);
        CELL(row, 1, "%s", r->name);
        CELL(row, 2, "%s", r->backend);
        CELL(row, 3, "%d", r->threads);
        format_shape(&r->shape, row->cell[4], TABLE_CELL);
        CELL(row, 5, "%.1f", r->bytes / 1e6);
        CELL(row, 6, "%.3f", r->stats.median_s * 1e3);
        CELL(row, 7, "%.3f", r->stats.min_s * 1e3);
        CELL(row, 8, "%.3f", r->stats.max_s * 1e3);
        CELL(row, 9, "%.2f", r->gb_per_s);
        if (r->flops > 0.0)
            CELL(row, 10, "%.2f", r->gflop_per_s);
        else
            CELL(row, 10, "-");
        if (r->tokens > 0.0)
            CELL(row, 11, "%.3f", r->tokens_per_s / 1e6);
        else
            CELL(row, 11, "-");
        if (r->bound_value > 0.0)
            CELL(row, 12, "%s %.1f %s", r->bound, r->bound_value, r->bound_unit);
        else if (r->bound[0])
            CELL(row, 12, "%s (not measured)", r->bound);
        else
            CELL(row, 12, "-");
        if (strcmp(r->check, "non-finite") == 0)
            CELL(row, 13, "NaN!");
        else if (r->fraction >= 0.0)
            CELL(row, 13, "%.2f", r->fraction);
        else
            CELL(row, 13, "-");
        cell_note(row->cell[14], r->note);
    }
    if (res.n_rows) {
        fputs("\nResults (median of the repeats; frac = achieved / bound)\n", f);
        table_print(f, &res);
    }

    /* Backwards (the backward suite): each against its parallel forward and its
     * bound, beside the record's own targets (issue #15's or #16's). */
    table bwd = {11,
                 {"backend", "case", "thr", "shape", "fwd ms", "bwd ms", "bwd/fwd", "q1-q3",
                  "GFLOP/s", "frac", "targets"},
                 {false, false, true, false, true, true, true, true, true, true, false},
                 rows,
                 0};
    memset(rows, 0, n_rows * sizeof *rows);
    for (int i = 0; i < g_n_records; i++) {
        const bench_record *r = &g_records[i];
        if (strcmp(r->kind, "measurement") != 0 || !(r->bwd_over_fwd > 0.0)) continue;
        table_row *row = &bwd.rows[bwd.n_rows++];
        CELL(row, 0, "%s", r->backend);
        CELL(row, 1, "%s", r->name);
        CELL(row, 2, "%d", r->threads);
        format_shape(&r->shape, row->cell[3], TABLE_CELL);
        CELL(row, 4, "%.3f", r->forward_s * 1e3);
        CELL(row, 5, "%.3f", r->stats.median_s * 1e3);
        CELL(row, 6, "%.2f", r->bwd_over_fwd);
        if (r->paired_ratio > 0.0) /* the middle half of the paired repeats' ratios */
            CELL(row, 7, "%.2f-%.2f", r->paired_q1, r->paired_q3);
        else
            CELL(row, 7, "-");
        CELL(row, 8, "%.2f", r->gflop_per_s);
        if (strcmp(r->check, "non-finite") == 0) {
            CELL(row, 9, "NaN!");
            CELL(row, 10, "gradients hold NaN or inf");
            continue;
        }
        if (r->fraction >= 0.0)
            CELL(row, 9, "%.2f", r->fraction);
        else
            CELL(row, 9, "-");
        char ratio_text[48], frac_text[80];
        if (r->target_bwd_over_fwd > 0.0)
            snprintf(ratio_text, sizeof ratio_text, "ratio <= %.1f %s", r->target_bwd_over_fwd,
                     r->bwd_over_fwd <= r->target_bwd_over_fwd ? "met" : "MISSED");
        else
            snprintf(ratio_text, sizeof ratio_text, "ratio: none");
        if (!(r->target_fraction > 0.0))
            snprintf(frac_text, sizeof frac_text, "frac of %s: none", r->bound[0] ? r->bound : "-");
        else if (r->fraction >= 0.0)
            snprintf(frac_text, sizeof frac_text, "frac >= %.2f %s", r->target_fraction,
                     r->fraction >= r->target_fraction ? "met" : "MISSED");
        else
            snprintf(frac_text, sizeof frac_text, "frac unknown (%s not measured)", r->bound);
        CELL(row, 10, "%s, %s", ratio_text, frac_text);
    }
    if (bwd.n_rows) {
        fprintf(f,
                "\nBackward vs parallel forward (each row's targets: issue #15, linear-state and "
                "softmax: bwd/fwd <= %.1f, frac of sgemm_large >= %.2f; issue #16, DeltaNet: "
                "<= %.1f, >= %.2f; the selective scan: none here, frac of copy; its target, "
                ">= %.0fx PyTorch autograd, is bench/peers.py's; bwd/fwd is the median over "
                "repeats timing both in turns, q1-q3 its quartiles, the ms columns each one's "
                "median)\n",
                BENCH_BACKWARD_MAX_RATIO, BENCH_BACKWARD_MIN_FRACTION,
                BENCH_DELTANET_BACKWARD_MAX_RATIO, BENCH_DELTANET_BACKWARD_MIN_FRACTION,
                BENCH_SSCAN_BACKWARD_MIN_PEER_RATIO);
        table_print(f, &bwd);
    }

    /* Computed sizes (kind "memory"): one line each. */
    table mem = {6, {"suite", "case", "backend", "shape", "bytes", "note"},
                 {false, false, false, false, true, false}, rows, 0};
    memset(rows, 0, n_rows * sizeof *rows);
    for (int i = 0; i < g_n_records; i++) {
        const bench_record *r = &g_records[i];
        if (strcmp(r->kind, "memory") != 0) continue;
        table_row *row = &mem.rows[mem.n_rows++];
        CELL(row, 0, "%s", r->suite);
        CELL(row, 1, "%s", r->name);
        CELL(row, 2, "%s", r->backend);
        format_shape(&r->shape, row->cell[3], TABLE_CELL);
        CELL(row, 4, "%.0f", r->bytes);
        cell_note(row->cell[5], r->note);
    }
    if (mem.n_rows) {
        fputs("\nMemory (computed, not timed; bytes per sequence and layer)\n", f);
        table_print(f, &mem);
    }

    /* Suites' summaries (kind "crossover", ...): one line each. */
    table sum = {5, {"suite", "summary", "backend", "case", "verdict"},
                 {false, false, false, false, false}, rows, 0};
    memset(rows, 0, n_rows * sizeof *rows);
    for (int i = 0; i < g_n_records; i++) {
        const bench_record *r = &g_records[i];
        if (strcmp(r->kind, "measurement") == 0 || strcmp(r->kind, "ceiling") == 0 ||
            strcmp(r->kind, "skipped") == 0 || strcmp(r->kind, "memory") == 0)
            continue;
        table_row *row = &sum.rows[sum.n_rows++];
        CELL(row, 0, "%s", r->suite);
        CELL(row, 1, "%s", r->kind);
        CELL(row, 2, "%s", r->backend);
        CELL(row, 3, "%s", r->name);
        cell_note(row->cell[4], r->note);
    }
    if (sum.n_rows) {
        fputs("\nSummaries\n", f);
        table_print(f, &sum);
    }

    bool any_skipped = false;
    for (int i = 0; i < g_n_records; i++) {
        const bench_record *r = &g_records[i];
        if (strcmp(r->kind, "skipped") != 0) continue;
        if (!any_skipped) fputs("\nSkipped\n", f);
        any_skipped = true;
        if (r->suite[0])
            fprintf(f, "  %s %s %s: %s\n", r->suite, r->name, r->backend, r->note);
        else
            fprintf(f, "  backend %s: %s\n", r->backend, r->note);
    }
    free(rows);
}

bool bench_skip_unsupported(seqk_status st, bench_record *rec)
{
    if (st != SEQK_ERROR_UNSUPPORTED) return false;
    rec->kind = "skipped";
    snprintf(rec->note, sizeof rec->note, "%s", seqk_last_error());
    return true;
}

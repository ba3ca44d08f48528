/* `csurelay state -d DIR`: replays the AOF read-only into a fresh state and prints it, as text for
 * people or as the admin API's JSON views (state_json.h) for tools. Nothing here writes to the
 * state directory, so it is safe beside a running relay. */
#include "cli_state.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "csurelay/ingress.h"
#include "csurelay/pipeline.h"
#include "csurelay/timefmt.h" /* CSR_TIME_BUF */
#include "state_json.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };
enum { DEFAULT_LIMIT = 20 };

struct opts {
  const char *dir;
  bool json;
  bool dlq_only;
  size_t limit;
};

static void usage(FILE *out) {
  fprintf(out, "usage: csurelay state -d DIR [--json] [--dlq] [--limit N]\n"
               "  -d, --dir DIR  the state directory (state.dir of the configuration)\n"
               "  --json         print JSON: {\"aof\", \"summary\", \"dlq\"}\n"
               "  --dlq          print only the dead letters\n"
               "  --limit N      list at most N dead letters (default 20)\n");
}

static int parse_limit(const char *text, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (text[0] < '0' || text[0] > '9' || *end != '\0' || errno != 0 || v > SIZE_MAX)
    return -1;
  *out = (size_t)v;
  return 0;
}

/* The value of option `name` at argv[*i] ("--name V", "--name=V" or, with `shrt`, "-d V"). */
static const char *value_of(int argc, char **argv, int *i, const char *name, const char *shrt) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (strncmp(a, name, n) == 0 && a[n] == '=')
    return a + n + 1;
  if ((strcmp(a, name) == 0 || (shrt && strcmp(a, shrt) == 0)) && *i + 1 < argc)
    return argv[++*i];
  return NULL;
}

/* 0, or EXIT_USAGE after saying why; 1 for -h (usage printed, exit 0). */
static int parse_args(int argc, char **argv, struct opts *o) {
  *o = (struct opts){.limit = DEFAULT_LIMIT};
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 1;
    }
    if (strcmp(a, "--json") == 0) {
      o->json = true;
    } else if (strcmp(a, "--dlq") == 0) {
      o->dlq_only = true;
    } else if ((v = value_of(argc, argv, &i, "--dir", "-d")) != NULL) {
      o->dir = v;
    } else if ((v = value_of(argc, argv, &i, "--limit", NULL)) != NULL) {
      if (parse_limit(v, &o->limit) < 0) {
        fprintf(stderr, "csurelay state: --limit wants a number, not '%s'\n", v);
        return EXIT_USAGE;
      }
    } else {
      fprintf(stderr, "csurelay state: unknown or incomplete option '%s'\n", a);
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (o->dir == NULL || o->dir[0] == '\0') {
    fprintf(stderr, "csurelay state: missing -d DIR\n");
    usage(stderr);
    return EXIT_USAGE;
  }
  return 0;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------------------------------- */
/* Text                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

/* Stored text comes from remote parties: control bytes would drive the terminal, so they print
 * as '?'. Pads to `width` columns (bytes, which is what ids are made of). */
static void put_clean(const char *s, int width) {
  int n = 0;
  for (; *s; s++, n++)
    putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
  for (; n < width; n++)
    putchar(' ');
}

static void print_aof(const char *path, const struct pl_store_stats *st) {
  printf("aof           %s (%llu bytes, %llu records)\n", path, (unsigned long long)st->file_bytes,
         (unsigned long long)st->records_replayed);
  if (st->torn_tails)
    printf("torn tail     %llu bytes at the end (a crash or a write in progress; the relay cuts "
           "it at its next start)\n",
           (unsigned long long)st->torn_bytes);
  if (st->corrupt_regions)
    printf("DAMAGE        %s\n", st->health_reason);
}

/* 42s, 3m07s, 1h49m, 2d03h: enough to see at a glance how far behind a cursor is. */
static void format_lag(int64_t s, char *buf, size_t len) {
  if (s < 60)
    snprintf(buf, len, "%llds", (long long)s);
  else if (s < 3600)
    snprintf(buf, len, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else if (s < 86400)
    snprintf(buf, len, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  else
    snprintf(buf, len, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
}

static void print_summary(const struct pl_state *s, int64_t now) {
  struct pl_state_stats st;
  pl_state_stats(s, &st);
  printf("events        %llu live (%llu parked on dead letters), %llu finished\n",
         (unsigned long long)st.live, (unsigned long long)st.parked,
         (unsigned long long)st.finished);
  printf("deliveries    %llu pending, %llu waiting to retry, %llu dead letters\n",
         (unsigned long long)st.pending, (unsigned long long)st.waiting,
         (unsigned long long)st.dead_letters);
  printf("memory        %llu bytes of rows, %llu bytes for live events\n",
         (unsigned long long)st.row_bytes, (unsigned long long)st.live_bytes);
  struct cs_jobs_stats js; /* pl_state_jobs wants a mutable state; this only reads counts */
  cs_jobs_stats(pl_state_jobs((struct pl_state *)s), &js);
  printf("customer jobs %llu pending, %llu ended, %llu accounts mapped\n",
         (unsigned long long)js.pending, (unsigned long long)js.ended,
         (unsigned long long)js.accounts);
  printf("cursors%s\n", st.cursors ? "" : "       none");
  const char *csu, *type;
  int64_t at;
  for (size_t i = 0; pl_state_cursor_at(s, i, &csu, &type, &at) == 0; i++) {
    char when[CSR_TIME_BUF], lag[32];
    if (csr_state_json_time(at, when, sizeof(when)) == 0)
      snprintf(when, sizeof(when), "%lld ms", (long long)at);
    format_lag(now > at ? (now - at) / 1000 : 0, lag, sizeof(lag));
    printf("  ");
    put_clean(csu, 12);
    putchar(' ');
    put_clean(type, 14);
    printf(" %-24s  lag %s\n", when, lag);
  }
}

static void print_dlq(const struct pl_state *s, size_t limit) {
  struct pl_state_stats st;
  pl_state_stats(s, &st);
  size_t shown = st.dead_letters < limit ? (size_t)st.dead_letters : limit;
  printf("dead letters  %llu", (unsigned long long)st.dead_letters);
  if (shown == 0)
    printf("\n");
  else if (shown < st.dead_letters)
    printf(", the oldest %zu:\n", shown);
  else
    printf(", oldest first:\n");
  int width = 0;
  const struct pl_state_delivery *d = NULL;
  for (size_t i = 0; i < shown && (d = pl_state_dlq_next(s, d)) != NULL; i++)
    if ((int)strlen(d->event->id) > width)
      width = (int)strlen(d->event->id);
  if (shown)
    printf("  %-*s  %-10s %8s %6s  %s\n", width, "ID", "SINK", "ATTEMPTS", "STATUS", "REASON");
  d = NULL;
  for (size_t i = 0; i < shown && (d = pl_state_dlq_next(s, d)) != NULL; i++) {
    printf("  ");
    put_clean(d->event->id, width);
    printf("  ");
    put_clean(d->sink, 10);
    printf(" %8u ", d->attempt);
    if (d->status)
      printf("%6d  ", d->status);
    else
      printf("%6s  ", "-");
    put_clean(d->reason[0] ? d->reason : "-", 0);
    putchar('\n');
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* JSON                                                                                           */
/* ---------------------------------------------------------------------------------------------- */

static void json_aof(struct csr_jw *jw, const char *path, const struct pl_store_stats *st,
                     const struct csr_err *err) {
  csr_jw_obj(jw);
  csr_jw_kstr(jw, "path", path);
  csr_jw_kint(jw, "file_bytes", (int64_t)st->file_bytes);
  csr_jw_kint(jw, "records_replayed", (int64_t)st->records_replayed);
  csr_jw_kint(jw, "torn_tails", (int64_t)st->torn_tails);
  csr_jw_kint(jw, "torn_bytes", (int64_t)st->torn_bytes);
  csr_jw_kint(jw, "corrupt_regions", (int64_t)st->corrupt_regions);
  csr_jw_kint(jw, "corrupt_bytes", (int64_t)st->corrupt_bytes);
  csr_jw_kbool(jw, "healthy", st->healthy);
  csr_jw_kstr(jw, "damage", err->msg[0] ? err->msg : NULL);
  csr_jw_obj_end(jw);
}

static int print_json(const struct opts *o, const char *path, const struct pl_store_stats *st,
                      const struct csr_err *err, const struct pl_state *s) {
  struct csr_jw jw;
  if (csr_jw_init(&jw) < 0)
    return UV_ENOMEM;
  int rc = 0;
  if (o->dlq_only) {
    rc = csr_state_json_dlq(&jw, s, 0, o->limit);
  } else {
    csr_jw_obj(&jw);
    csr_jw_key(&jw, "aof");
    json_aof(&jw, path, st, err);
    csr_jw_key(&jw, "summary");
    rc = csr_state_json_summary(&jw, s, wall_ms());
    csr_jw_key(&jw, "dlq");
    if (rc == 0)
      rc = csr_state_json_dlq(&jw, s, 0, o->limit);
    csr_jw_obj_end(&jw);
  }
  const char *text;
  size_t len;
  if (rc == 0)
    rc = csr_jw_finish(&jw, &text, &len);
  if (rc == 0)
    printf("%.*s\n", (int)len, text);
  csr_jw_free(&jw);
  return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* The command                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

/* Replays the AOF into s; on failure says why on stderr. */
static int load(const char *dir, struct pl_state *s, struct pl_store_stats *st,
                struct csr_err *err) {
  int rc = pl_store_read(dir, pl_state_replay, s, st, err);
  if (rc == UV_ENOENT) {
    fprintf(stderr, "csurelay state: no state in %s (no csurelay.aof)\n", dir);
  } else if (rc < 0) {
    char why[1024];
    csr_err_format(err, why, sizeof(why));
    const char *detail = pl_state_error(s); /* names the record a refused replay stopped at */
    fprintf(stderr, "csurelay state: %s%s%s\n", why, detail[0] ? ": " : "", detail);
  }
  return rc;
}

static int print(const struct opts *o, const char *path, const struct pl_store_stats *st,
                 const struct csr_err *err, const struct pl_state *s) {
  if (o->json) {
    int rc = print_json(o, path, st, err, s);
    if (rc < 0)
      fprintf(stderr, "csurelay state: cannot write the JSON: %s\n", csr_strerror(rc));
    return rc;
  }
  if (!o->dlq_only) {
    print_aof(path, st);
    print_summary(s, wall_ms());
  }
  print_dlq(s, o->limit);
  return 0;
}

int csr_cmd_state(int argc, char **argv) {
  struct opts o;
  int rc = parse_args(argc, argv, &o);
  if (rc != 0)
    return rc == 1 ? EXIT_OK : rc;
  size_t plen = strlen(o.dir) + sizeof("/csurelay.aof");
  char *path = malloc(plen);
  struct pl_state *s = NULL;
  if (path == NULL || pl_state_create(NULL, &s) < 0) {
    fprintf(stderr, "csurelay state: out of memory\n");
    free(path);
    return EXIT_FAIL;
  }
  snprintf(path, plen, "%s/csurelay.aof", o.dir);
  struct pl_store_stats st;
  struct csr_err err;
  rc = load(o.dir, s, &st, &err);
  if (rc == 0)
    rc = print(&o, path, &st, &err, s);
  free(path);
  pl_state_destroy(s);
  return rc < 0 ? EXIT_FAIL : EXIT_OK;
}

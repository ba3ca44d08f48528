/* The csurelay binary end to end: --version, check (good, typo'd, missing), and run: /healthz,
 * /metrics, the admin token, reload by SIGHUP and POST /v1/reload (bad config rejected, good one
 * applied), and a clean exit 0 on SIGTERM. Every wait is bounded. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#define OUT_MAX 16384

struct proc {
  pid_t pid;
  int out_fd;
  int err_fd;
  char out[OUT_MAX];
  char err[OUT_MAX];
  size_t out_len;
  size_t err_len;
};

static const char *bin(void) {
  const char *b = getenv("CSR_BIN");
  return b ? b : "./csurelay";
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void spawn(struct proc *p, char *const argv[], char *const extra_env) {
  int out[2], err[2];
  assert_int_equal(pipe(out), 0);
  assert_int_equal(pipe(err), 0);
  memset(p, 0, sizeof(*p));
  p->pid = fork();
  assert_true(p->pid >= 0);
  if (p->pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]);
    close(err[0]);
    if (extra_env)
      putenv(extra_env);
    execv(argv[0], argv);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  p->out_fd = out[0];
  p->err_fd = err[0];
  fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
  fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
}

static void drain_fd(int *fd, char *buf, size_t *len) {
  if (*fd < 0)
    return;
  for (;;) {
    ssize_t n = read(*fd, buf + *len, OUT_MAX - 1 - *len);
    if (n > 0) {
      *len += (size_t)n;
      buf[*len] = '\0';
      continue;
    }
    if (n == 0 || *len == OUT_MAX - 1) {
      close(*fd);
      *fd = -1;
    }
    return;
  }
}

static void pump(struct proc *p, int timeout_ms) {
  struct pollfd fds[2] = {{.fd = p->out_fd, .events = POLLIN}, {.fd = p->err_fd, .events = POLLIN}};
  poll(fds, 2, timeout_ms);
  drain_fd(&p->out_fd, p->out, &p->out_len);
  drain_fd(&p->err_fd, p->err, &p->err_len);
}

/* Waits up to `timeout_ms` for exit; returns the exit code, or -1 on timeout (process killed). */
static int wait_exit(struct proc *p, int timeout_ms) {
  long deadline = now_ms() + timeout_ms;
  int status;
  for (;;) {
    pump(p, 20);
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid) {
      pump(p, 0);
      if (p->out_fd >= 0)
        close(p->out_fd);
      if (p->err_fd >= 0)
        close(p->err_fd);
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (now_ms() > deadline) {
      kill(p->pid, SIGKILL);
      waitpid(p->pid, &status, 0);
      return -1;
    }
  }
}

static int run(char *const argv[], struct proc *p) {
  spawn(p, argv, NULL);
  return wait_exit(p, 10000);
}

static void test_version(void **state) {
  struct proc p;
  char *argv[] = {(char *)bin(), "--version", NULL};
  assert_int_equal(run(argv, &p), 0);
  assert_true(strncmp(p.out, "csurelay ", 9) == 0);
}

static void test_usage_errors(void **state) {
  struct proc p;
  char *none[] = {(char *)bin(), NULL};
  assert_int_equal(run(none, &p), 2);
  assert_non_null(strstr(p.err, "usage:"));
  char *nofile[] = {(char *)bin(), "check", NULL};
  assert_int_equal(run(nofile, &p), 2);
  assert_non_null(strstr(p.err, "missing -c FILE"));
  char *bogus[] = {(char *)bin(), "frobnicate", NULL};
  assert_int_equal(run(bogus, &p), 2);
}

/* Finds the 1-based line of `needle` in `path`. */
static int line_of(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[1024];
  int n = 0, found = 0;
  while (!found && fgets(line, sizeof(line), f)) {
    n++;
    found = strstr(line, needle) != NULL && line[strspn(line, " ")] != '#';
  }
  fclose(f);
  assert_true(found);
  return n;
}

static void test_check_typo_names_file_line_key(void **state) {
  char path[512], expect[600];
  snprintf(path, sizeof(path), "%s/config/typo.yaml", getenv("CSR_TEST_DATA"));
  int line = line_of(path, "poll_intervall_ms");
  struct proc p;
  char *argv[] = {(char *)bin(), "check", "-c", path, NULL};
  assert_int_equal(run(argv, &p), 1);
  snprintf(expect, sizeof(expect), "%s:%d:", path, line);
  assert_non_null(strstr(p.err, expect));
  assert_non_null(strstr(p.err, "poll_intervall_ms"));
  assert_non_null(strstr(p.err, "did you mean 'poll_interval_ms'"));
}

static void test_check_missing_file(void **state) {
  struct proc p;
  char *argv[] = {(char *)bin(), "check", "-c", "/nonexistent/csurelay.yaml", NULL};
  assert_int_equal(run(argv, &p), 1);
  assert_non_null(strstr(p.err, "/nonexistent/csurelay.yaml"));
  assert_non_null(strstr(p.err, "No such file"));
}

/* Picks a free loopback port (bind to 0, read it, close): racy in theory, fine on loopback. */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

/* One request on a fresh connection; returns the status (0 when nothing answered). */
static int http(int port, const char *method, const char *path, const char *token, char *body,
                size_t body_len) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    close(fd);
    return 0;
  }
  char req[512], auth[256] = "";
  if (token)
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", token);
  int n = snprintf(req, sizeof(req),
                   "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: 0\r\n"
                   "Connection: close\r\n\r\n",
                   method, path, auth);
  assert_int_equal(write(fd, req, (size_t)n), n);
  char resp[OUT_MAX];
  size_t len = 0;
  ssize_t r;
  while (len < sizeof(resp) - 1 && (r = read(fd, resp + len, sizeof(resp) - 1 - len)) > 0)
    len += (size_t)r;
  resp[len] = '\0';
  close(fd);
  int status = 0;
  sscanf(resp, "HTTP/1.1 %d", &status);
  const char *b = strstr(resp, "\r\n\r\n");
  if (body)
    snprintf(body, body_len, "%s", b ? b + 4 : "");
  return status;
}

/* The state lives beside the config ({dir}/var): the store locks its directory. */
static void write_config(const char *path, int port, const char *extra) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  char dir[600];
  snprintf(dir, sizeof(dir), "%s", path);
  *strrchr(dir, '/') = '\0';
  fprintf(f,
          "state: {dir: %s/var}\n"
          "admin: {listen: 127.0.0.1:%d, token_env: CSR_TEST_ADMIN_TOKEN}\n"
          "%s",
          dir, port, extra);
  fclose(f);
}

static void remove_state(const char *dir) {
  char p[700];
  const char *names[] = {"csurelay.aof", "csurelay.lock", NULL};
  for (int i = 0; names[i]; i++) {
    snprintf(p, sizeof(p), "%s/var/%s", dir, names[i]);
    unlink(p);
  }
  snprintf(p, sizeof(p), "%s/var", dir);
  rmdir(p);
}

static int wait_healthy(struct proc *p, int port) {
  long deadline = now_ms() + 5000;
  while (now_ms() < deadline) {
    if (http(port, "GET", "/healthz", NULL, NULL, 0) == 200)
      return 1;
    pump(p, 20);
  }
  return 0;
}

static void test_run_serves_reloads_and_stops(void **state) {
  char dir[] = "/tmp/csr-cli-XXXXXX", path[600], body[OUT_MAX];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/relay.yaml", dir);
  int port = free_port();
  write_config(path, port, "log: {level: info}\n");

  struct proc p;
  char *argv[] = {(char *)bin(), "run", "-c", path, NULL};
  spawn(&p, argv, "CSR_TEST_ADMIN_TOKEN=s3cret-token");
  assert_true(wait_healthy(&p, port));

  /* /healthz needs no token; everything else does. */
  assert_int_equal(http(port, "GET", "/metrics", NULL, body, sizeof(body)), 401);
  assert_int_equal(http(port, "GET", "/metrics", "wrong", body, sizeof(body)), 401);
  assert_int_equal(http(port, "GET", "/metrics", "s3cret-token", body, sizeof(body)), 200);
  assert_non_null(strstr(body, "# TYPE csurelay_build_info gauge"));
  assert_non_null(strstr(body, "csurelay_admin_requests_total "));
  assert_int_equal(http(port, "GET", "/readyz", "s3cret-token", body, sizeof(body)), 200);
  assert_int_equal(http(port, "GET", "/nope", "s3cret-token", body, sizeof(body)), 404);

  /* A broken config is rejected, by SIGHUP and by the API, and the relay keeps serving. */
  write_config(path, port, "bogus_section: 1\n");
  kill(p.pid, SIGHUP);
  pump(&p, 200);
  assert_int_equal(http(port, "GET", "/healthz", NULL, NULL, 0), 200);
  assert_int_equal(http(port, "POST", "/v1/reload", "s3cret-token", body, sizeof(body)), 400);
  assert_non_null(strstr(body, "bogus_section"));
  write_config(path, port, "log: {level: debug}\n");
  assert_int_equal(http(port, "POST", "/v1/reload", "s3cret-token", body, sizeof(body)), 200);
  /* The reload drains the pipeline and opens the new one: it counts once that is done. */
  long deadline = now_ms() + 5000;
  do {
    pump(&p, 20);
    assert_int_equal(http(port, "GET", "/metrics", "s3cret-token", body, sizeof(body)), 200);
  } while (!strstr(body, "csurelay_config_reloads_total{result=\"ok\"} 1") && now_ms() < deadline);
  assert_non_null(strstr(body, "csurelay_config_reloads_total{result=\"ok\"} 1"));
  assert_non_null(strstr(body, "csurelay_config_reloads_total{result=\"rejected\"} 2"));

  kill(p.pid, SIGTERM);
  assert_int_equal(wait_exit(&p, 5000), 0);
  assert_non_null(strstr(p.err, "\"msg\":\"stopped cleanly\""));
  assert_null(strstr(p.err, "s3cret-token")); /* secrets never reach the log */
  unlink(path);
  remove_state(dir);
  rmdir(dir);
}

static void test_run_fails_cleanly_on_busy_port(void **state) {
  char dir[] = "/tmp/csr-cli-XXXXXX", path[600];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/relay.yaml", dir);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(listen(fd, 1), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  write_config(path, ntohs(a.sin_port), "");
  struct proc p;
  char *argv[] = {(char *)bin(), "run", "-c", path, NULL};
  assert_int_equal(run(argv, &p), 1);
  assert_non_null(strstr(p.err, "cannot serve the admin API"));
  close(fd);
  unlink(path);
  rmdir(dir);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version),
      cmocka_unit_test(test_usage_errors),
      cmocka_unit_test(test_check_typo_names_file_line_key),
      cmocka_unit_test(test_check_missing_file),
      cmocka_unit_test(test_run_serves_reloads_and_stops),
      cmocka_unit_test(test_run_fails_cleanly_on_busy_port),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The retry scheduler (SPEC section 3 "Retries", pipeline.h "Retry scheduler"): per-sink in-flight
 * and rate limits, jittered backoff on one timer, a sink-wide pause on throttling, and the
 * dead-letter decision after max_attempts.
 *
 * Waiting items sit in a binary min-heap of pointers keyed by (due, seq), each item knowing its
 * index, so expiry and cancel are O(log n) and nothing ever scans the waiting set. Ready items sit
 * in a second heap keyed by (EventDateTime, seq): oldest event first. Polling hands over each
 * second's events as one burst that takes the loop a good part of the next second; working it
 * oldest-first lets the events that already waited longest for their second to end go out
 * first. Every path that
 * may start deliveries ends in pump(), which runs only from the loop (the kick future, the timer or
 * a delivery's done), never inside a caller's call, and re-arms the one timer for whatever it is
 * blocked on next. close() frees the scheduler only from the kick future, after every item came
 * back, so a callback that closes the scheduler never pulls it out from under pump().
 *
 * Each attempt borrows a struct sk_delivery (with its 320 bytes of reason and excerpt) from the
 * scheduler's pool and gives it back once the callback that reads its answer has returned; a
 * waiting or queued item holds none.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csurelay/pipeline.h"

#define NEVER        UINT64_MAX
#define ELIMIT_WAIT  20 /* ms before asking a sink again that refused for its own limit */
#define DEF_BASE_MS  1000
#define DEF_CAP_MS   300000
#define DEF_ATTEMPTS 10
#define MAX_REASON   "max_attempts: "

enum { ST_IDLE, ST_QUEUED, ST_WAITING, ST_FLIGHT, ST_RELEASED };

struct list {
  struct pl_sched_item *head, *tail;
  size_t n;
};

/* A binary min-heap of items by (key, seq); an item is in at most one, and knows its index there.
 * The keys live in the array, so ordering reads only the array: comparing through the items and
 * their events (the ready heap's key is the event's time) chased two pointers per side, 2.6 % of
 * the loop at 10,000 ev/s with thousands of webhook deliveries ready. */
struct heap_slot {
  uint64_t key, seq;
  struct pl_sched_item *it;
};

struct heap {
  struct heap_slot *v;
  size_t len, cap;
};

/* The delivery one attempt borrows; `next` links the pool's free ones. */
struct loan {
  struct sk_delivery d;
  struct pl_sched_item *it;
  struct loan *next;
};

struct pl_sched {
  struct rx_loop *loop;
  struct sk_sink *sink;
  struct pl_sched_opts opts;
  struct pl_sched_ops ops;
  void *arg;
  uint64_t rng;
  uint64_t seq;
  struct heap ready;    /* ready, oldest event first */
  struct list flight;   /* in flight (close cancels them) */
  struct list released; /* cancelled, for on_cancelled from the kick */
  struct heap waiting; /* in backoff or submitted for later, soonest due first */
  struct loan *free_loans;
  uint64_t n_loans; /* allocated, lent or free */
  struct rx_timer timer;
  uint64_t timer_due; /* loop time the timer is armed for, NEVER when stopped */
  struct rx_fut kick;
  double tokens;
  uint64_t tokens_ms;    /* loop time of the last refill */
  uint64_t pause_until;  /* loop time; 0 when never paused */
  uint64_t pause_set;    /* loop time the current pause was set or lengthened */
  uint64_t throttle_len; /* the last pause's length while throttling continues, else 0 */
  unsigned window;
  uint64_t n_delivered, n_skipped, n_dead, n_retried, n_cancelled, n_pauses;
  unsigned n_flight;
  int closing;
  int freed_pending; /* the timer is closing; free in its callback */
  void (*close_cb)(void *arg);
  void *close_arg;
};

static void pump(struct pl_sched *s);

/* ---------------------------------------------------------------------------------------------- */
/* Lists and the heap */
/* ---------------------------------------------------------------------------------------------- */

static void list_push(struct list *l, struct pl_sched_item *it) {
  l->n++;
  it->_next = NULL;
  it->_prev = l->tail;
  if (l->tail)
    l->tail->_next = it;
  else
    l->head = it;
  l->tail = it;
}

static void list_remove(struct list *l, struct pl_sched_item *it) {
  l->n--;
  if (it->_prev)
    it->_prev->_next = it->_next;
  else
    l->head = it->_next;
  if (it->_next)
    it->_next->_prev = it->_prev;
  else
    l->tail = it->_prev;
  it->_prev = it->_next = NULL;
}

/* The ready heap's key: the event's time, oldest first (order-preserving for negative times). */
static uint64_t age_key(const struct pl_sched_item *it) {
  int64_t t = it->event ? it->event->time_ms : 0;
  return (uint64_t)t ^ (UINT64_C(1) << 63);
}

static bool slot_before(const struct heap_slot *a, const struct heap_slot *b) {
  return a->key < b->key || (a->key == b->key && a->seq < b->seq);
}

static void heap_set(struct heap *h, size_t i, struct heap_slot slot) {
  h->v[i] = slot;
  slot.it->_heap_idx = i;
}

static void sift_up(struct heap *h, size_t i) {
  struct heap_slot slot = h->v[i];
  while (i > 0 && slot_before(&slot, &h->v[(i - 1) / 2])) {
    heap_set(h, i, h->v[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  heap_set(h, i, slot);
}

static void sift_down(struct heap *h, size_t i) {
  struct heap_slot slot = h->v[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->len)
      break;
    if (c + 1 < h->len && slot_before(&h->v[c + 1], &h->v[c]))
      c++;
    if (!slot_before(&h->v[c], &slot))
      break;
    heap_set(h, i, h->v[c]);
    i = c;
  }
  heap_set(h, i, slot);
}

static int heap_reserve(struct heap *h, size_t n) {
  if (n <= h->cap)
    return 0;
  size_t cap = h->cap ? h->cap : 64;
  while (cap < n)
    cap *= 2;
  struct heap_slot *v = realloc(h->v, cap * sizeof(*v));
  if (v == NULL)
    return -ENOMEM;
  h->v = v;
  h->cap = cap;
  return 0;
}

static int heap_push(struct heap *h, struct pl_sched_item *it, uint64_t key) {
  if (heap_reserve(h, h->len + 1) < 0)
    return -ENOMEM;
  heap_set(h, h->len++, (struct heap_slot){.key = key, .seq = it->_seq, .it = it});
  sift_up(h, h->len - 1);
  return 0;
}

static void heap_remove(struct heap *h, struct pl_sched_item *it) {
  size_t i = it->_heap_idx;
  struct heap_slot last = h->v[--h->len];
  if (i < h->len) {
    heap_set(h, i, last);
    sift_up(h, i);
    sift_down(h, last.it->_heap_idx);
  }
}

static struct pl_sched_item *heap_top(const struct heap *h) {
  return h->len > 0 ? h->v[0].it : NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Scheduling */
/* ---------------------------------------------------------------------------------------------- */

static void kick(struct pl_sched *s);

static uint64_t on_timer(struct rx_timer *timer) {
  struct pl_sched *s = timer->data;
  s->timer_due = NEVER;
  pump(s);
  return RX_TIMER_STOP; /* pump re-armed the timer when something is still due */
}

static void arm(struct pl_sched *s, uint64_t due) {
  if (due == NEVER) {
    if (s->timer_due != NEVER)
      rx_timer_stop(&s->timer);
    s->timer_due = NEVER;
    return;
  }
  if (due == s->timer_due && rx_timer_active(&s->timer))
    return;
  uint64_t now = rx_now_ms(s->loop);
  if (rx_timer_start(&s->timer, on_timer, due > now ? due - now : 0) == 0)
    s->timer_due = due;
}

/* Waits `delay` ms (from now) before the item's next attempt. */
static int wait_item(struct pl_sched *s, struct pl_sched_item *it, uint64_t delay) {
  uint64_t now = rx_now_ms(s->loop);
  it->_due_ms = delay > NEVER - now ? NEVER - 1 : now + delay;
  it->_seq = s->seq++;
  it->next_wall_ms = rx_wall_ms() + (int64_t)(delay > INT32_MAX ? INT32_MAX : delay);
  int rc = heap_push(&s->waiting, it, it->_due_ms);
  if (rc == 0)
    it->_state = ST_WAITING;
  return rc;
}

/* Never fails: submit reserved a ready slot for every item the scheduler holds. */
static void ready_push(struct pl_sched *s, struct pl_sched_item *it) {
  it->_state = ST_QUEUED;
  (void)heap_push(&s->ready, it, age_key(it));
}

static void queue_item(struct pl_sched *s, struct pl_sched_item *it) {
  it->_seq = s->seq++; /* ties on the event time keep the order items became ready */
  ready_push(s, it);
}

static void release(struct pl_sched *s, struct pl_sched_item *it) {
  it->_state = ST_RELEASED;
  list_push(&s->released, it);
  kick(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* Deliveries lent per attempt                                                                    */
/* ---------------------------------------------------------------------------------------------- */

static void on_done(struct sk_delivery *d);

/* Lends the item a cleared delivery for its next attempt; NULL when memory ran out. */
static struct sk_delivery *lend(struct pl_sched *s, struct pl_sched_item *it) {
  struct loan *l = s->free_loans;
  if (l != NULL)
    s->free_loans = l->next;
  else if ((l = malloc(sizeof(*l))) == NULL)
    return NULL;
  else
    s->n_loans++;
  memset(&l->d, 0, sizeof(l->d));
  l->it = it;
  l->next = NULL;
  l->d.data = it->delivery_data;
  l->d.event = it->event;
  l->d.conf = it->conf;
  l->d.attempt = it->attempt;
  l->d.done = on_done;
  it->d = &l->d;
  return &l->d;
}

/* Takes a delivery back. Only the loan is touched: after on_final or on_cancelled the item is the
 * caller's and may be gone, its `d` stale until it is submitted again (check_submit clears it).
 * Where the item stays the scheduler's, the caller clears item->d first. */
static void give_back(struct pl_sched *s, struct sk_delivery *d) {
  if (d == NULL)
    return;
  struct loan *l = RX_CONTAINER_OF(d, struct loan, d);
  l->it = NULL;
  l->next = s->free_loans;
  s->free_loans = l;
}

static unsigned limit(const struct pl_sched *s) {
  unsigned max = s->sink->conf->max_in_flight ? s->sink->conf->max_in_flight : UINT_MAX;
  return s->window < max ? s->window : max;
}

static double burst(const struct pl_sched *s) {
  double b = s->sink->conf->rate_per_s / 10.0;
  return b < 1.0 ? 1.0 : b;
}

/* Refills the bucket; returns 0 when a token is there, else the ms until one is. */
static uint64_t token_wait(struct pl_sched *s, uint64_t now) {
  double rate = s->sink->conf->rate_per_s;
  if (rate <= 0)
    return 0;
  s->tokens += (double)(now - s->tokens_ms) * rate / 1000.0;
  s->tokens_ms = now;
  if (s->tokens > burst(s))
    s->tokens = burst(s);
  if (s->tokens >= 1.0)
    return 0;
  uint64_t ms = (uint64_t)((1.0 - s->tokens) * 1000.0 / rate) + 1;
  return ms;
}

static void attempt_failed(struct pl_sched *s, struct pl_sched_item *it);

/* Starts one attempt of the oldest ready item. Returns the loop time to look again when the sink
 * refused for its own limit, or no delivery could be lent (NEVER otherwise). */
static uint64_t start_head(struct pl_sched *s, uint64_t now) {
  struct pl_sched_item *it = heap_top(&s->ready);
  heap_remove(&s->ready, it);
  struct sk_delivery *d = lend(s, it);
  int rc = d != NULL ? sk_deliver(s->sink, d) : CSR_ELIMIT;
  if (rc == CSR_ELIMIT) {
    it->d = NULL;
    give_back(s, d);
    ready_push(s, it); /* the same key: it is the oldest again */
    return now + ELIMIT_WAIT;
  }
  it->started_ms = now;
  if (s->sink->conf->rate_per_s > 0)
    s->tokens -= 1.0;
  if (rc == 0) {
    it->_state = ST_FLIGHT;
    it->next_wall_ms = 0;
    list_push(&s->flight, it);
    s->n_flight++;
  } else if (rc == -ECANCELED) {
    release(s, it); /* the sink is closing: the owner is shutting down */
  } else {
    d->outcome = SK_RETRY;
    d->status = 0;
    d->retry_after_ms = -1;
    snprintf(d->reason, sizeof(d->reason), "start");
    snprintf(d->excerpt, sizeof(d->excerpt), "%s", csr_strerror(rc));
    attempt_failed(s, it);
  }
  return NEVER;
}

static void pump(struct pl_sched *s) {
  if (s->closing)
    return;
  uint64_t now = rx_now_ms(s->loop);
  struct pl_sched_item *top;
  while ((top = heap_top(&s->waiting)) != NULL && top->_due_ms <= now) {
    heap_remove(&s->waiting, top);
    queue_item(s, top);
  }
  uint64_t due = NEVER;
  while (s->ready.len > 0 && !s->closing) {
    if (now < s->pause_until) {
      due = s->pause_until;
      break;
    }
    if (s->sink->in_flight >= limit(s)) {
      /* Our own done() pumps again; slots held by another user of the sink are polled. */
      if (s->n_flight == 0)
        due = now + ELIMIT_WAIT;
      break;
    }
    uint64_t wait = token_wait(s, now);
    if (wait > 0) {
      due = now + wait;
      break;
    }
    uint64_t again = start_head(s, now);
    if (again != NEVER) {
      due = again;
      break;
    }
  }
  if (s->closing)
    return;
  if ((top = heap_top(&s->waiting)) != NULL && top->_due_ms < due)
    due = top->_due_ms;
  arm(s, due);
}

/* ---------------------------------------------------------------------------------------------- */
/* Outcomes */
/* ---------------------------------------------------------------------------------------------- */

static void finish(struct pl_sched *s, struct pl_sched_item *it) {
  struct sk_delivery *d = it->d;
  it->_state = ST_IDLE;
  it->outcome = d->outcome;
  it->next_wall_ms = 0;
  switch (it->outcome) {
    case SK_DELIVERED:
      s->n_delivered++;
      break;
    case SK_SKIPPED:
      s->n_skipped++;
      break;
    default:
      s->n_dead++;
      break;
  }
  s->ops.on_final(s->arg, it);
  give_back(s, d);
}

/* "max_attempts: <reason>", cut to the field's size. */
static void max_attempts_reason(struct sk_delivery *d) {
  char last[sizeof(d->reason)];
  memcpy(last, d->reason, sizeof(last));
  last[sizeof(last) - 1] = '\0';
  size_t p = strlen(MAX_REASON), n = strlen(last);
  if (n > sizeof(d->reason) - 1 - p)
    n = sizeof(d->reason) - 1 - p;
  memcpy(d->reason, MAX_REASON, p);
  memcpy(d->reason + p, last, n);
  d->reason[p + n] = '\0';
}

static void attempt_failed(struct pl_sched *s, struct pl_sched_item *it) {
  s->n_retried++;
  struct sk_delivery *d = it->d;
  if (it->attempt >= s->opts.max_attempts) {
    max_attempts_reason(d);
    d->outcome = SK_DEAD;
    finish(s, it);
    return;
  }
  uint64_t delay = rx_backoff_ms(it->attempt - 1, s->opts.base_ms, s->opts.cap_ms, &s->rng);
  if (d->retry_after_ms > 0 && (uint64_t)d->retry_after_ms > delay)
    delay = (uint64_t)d->retry_after_ms;
  it->attempt++;
  if (wait_item(s, it, delay) < 0) {
    /* No room in the heap: the item stays admitted and replays after a restart. */
    it->attempt--;
    release(s, it); /* keeps the delivery until on_cancelled */
    return;
  }
  if (s->ops.on_attempt)
    s->ops.on_attempt(s->arg, it);
  it->d = NULL; /* it waits, still the scheduler's */
  give_back(s, d);
}

static int throttled(const struct sk_delivery *d) {
  return d->outcome == SK_RETRY &&
         (d->status == 429 || (d->status == 503 && d->retry_after_ms > 0));
}

/* Dataverse's rule: a sink that keeps pushing gets a longer Retry-After, so the whole sink waits,
 * and longer each time a request sent after a pause is throttled again. */
static void note_answer(struct pl_sched *s, const struct pl_sched_item *it, uint64_t now) {
  if (!throttled(it->d)) {
    if (it->started_ms >= s->pause_set) {
      s->throttle_len = 0;
      unsigned max = s->sink->conf->max_in_flight ? s->sink->conf->max_in_flight : UINT_MAX;
      if (s->window < max)
        s->window++;
    }
    return;
  }
  uint64_t ra = it->d->retry_after_ms > 0 ? (uint64_t)it->d->retry_after_ms : s->opts.base_ms;
  uint64_t len = ra;
  if (s->throttle_len > 0 && it->started_ms >= s->pause_set) {
    uint64_t grown = s->throttle_len > s->opts.cap_ms / 2 ? s->opts.cap_ms : s->throttle_len * 2;
    len = grown > ra ? grown : ra;
  }
  if (now >= s->pause_until)
    s->n_pauses++;
  if (now + len > s->pause_until)
    s->pause_until = now + len;
  if (it->started_ms >= s->pause_set || s->throttle_len == 0) {
    s->pause_set = now;
    if (len > s->throttle_len)
      s->throttle_len = len;
  }
  s->window = 1;
}

static void on_done(struct sk_delivery *d) {
  struct pl_sched_item *it = RX_CONTAINER_OF(d, struct loan, d)->it;
  struct pl_sched *s = it->_s;
  list_remove(&s->flight, it);
  s->n_flight--;
  uint64_t now = rx_now_ms(s->loop);
  if (!it->_cancel)
    note_answer(s, it, now);
  if (d->outcome != SK_RETRY) {
    finish(s, it);
  } else if (it->_cancel || s->closing) {
    s->n_cancelled++;
    it->_state = ST_IDLE;
    if (s->ops.on_cancelled)
      s->ops.on_cancelled(s->arg, it);
    give_back(s, d);
  } else {
    attempt_failed(s, it);
  }
  if (s->closing)
    kick(s); /* the close may be complete now */
  else
    pump(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* The kick: pumps from the loop, hands back cancelled items, completes a close */
/* ---------------------------------------------------------------------------------------------- */

static void on_timer_closed(struct rx_timer *timer) {
  struct pl_sched *s = timer->data;
  void (*cb)(void *) = s->close_cb;
  void *arg = s->close_arg;
  while (s->free_loans != NULL) {
    struct loan *l = s->free_loans;
    s->free_loans = l->next;
    free(l);
  }
  free(s->waiting.v);
  free(s->ready.v);
  free(s);
  if (cb)
    cb(arg);
}

static void on_kick(struct rx_fut *fut) {
  struct pl_sched *s = RX_CONTAINER_OF(fut, struct pl_sched, kick);
  while (s->released.head != NULL) {
    struct pl_sched_item *it = s->released.head;
    list_remove(&s->released, it);
    struct sk_delivery *d = it->d; /* lent when the attempt that released it had started */
    it->_state = ST_IDLE;
    s->n_cancelled++;
    if (s->ops.on_cancelled)
      s->ops.on_cancelled(s->arg, it);
    give_back(s, d);
  }
  if (!s->closing) {
    pump(s);
    return;
  }
  if (s->flight.head == NULL && s->released.head == NULL && !s->freed_pending &&
      !rx_fut_pending(&s->kick)) {
    s->freed_pending = 1;
    rx_timer_close(&s->timer, on_timer_closed);
  }
}

static void kick(struct pl_sched *s) {
  if (!rx_fut_pending(&s->kick)) {
    rx_fut_init(&s->kick, s->loop, on_kick);
    rx_fut_resolve(&s->kick, 0);
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* API */
/* ---------------------------------------------------------------------------------------------- */

int pl_sched_create(struct rx_loop *loop, struct sk_sink *sink, const struct pl_sched_opts *opts,
                    const struct pl_sched_ops *ops, void *arg, struct pl_sched **out) {
  if (loop == NULL || sink == NULL || sink->conf == NULL || ops == NULL || ops->on_final == NULL ||
      out == NULL)
    return UV_EINVAL;
  struct pl_sched *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return UV_ENOMEM;
  s->loop = loop;
  s->sink = sink;
  if (opts)
    s->opts = *opts;
  if (s->opts.base_ms == 0)
    s->opts.base_ms = DEF_BASE_MS;
  if (s->opts.cap_ms == 0)
    s->opts.cap_ms = DEF_CAP_MS;
  if (s->opts.cap_ms < s->opts.base_ms)
    s->opts.cap_ms = s->opts.base_ms;
  if (s->opts.max_attempts == 0)
    s->opts.max_attempts = DEF_ATTEMPTS;
  s->rng = s->opts.seed ? s->opts.seed : (uint64_t)rx_wall_ms() ^ (uint64_t)(uintptr_t)s;
  s->ops = *ops;
  s->arg = arg;
  s->window = UINT_MAX;
  s->timer_due = NEVER;
  s->tokens_ms = rx_now_ms(loop);
  s->tokens = burst(s);
  int rc = rx_timer_init(&s->timer, loop);
  if (rc < 0) {
    free(s);
    return rc;
  }
  s->timer.data = s;
  *out = s;
  return 0;
}

static int check_submit(struct pl_sched *s, struct pl_sched_item *item) {
  if (s == NULL || item == NULL || item->event == NULL)
    return UV_EINVAL;
  if (s->closing)
    return UV_ECANCELED;
  if (item->_s != NULL && item->_state != ST_IDLE)
    return UV_EBUSY;
  /* a ready slot for every item held, so that becoming ready never fails */
  if (heap_reserve(&s->ready, s->ready.len + s->waiting.len + s->n_flight + 1) < 0)
    return UV_ENOMEM;
  item->_s = s;
  item->d = NULL; /* a delivery lent for the last attempt goes back when its callback returns */
  item->_cancel = 0;
  item->started_ms = 0;
  item->next_wall_ms = 0;
  return 0;
}

int pl_sched_submit(struct pl_sched *s, struct pl_sched_item *item) {
  int rc = check_submit(s, item);
  if (rc < 0)
    return rc;
  item->attempt = 1;
  queue_item(s, item);
  kick(s);
  return 0;
}

int pl_sched_submit_at(struct pl_sched *s, struct pl_sched_item *item, unsigned attempt,
                       int64_t not_before_wall_ms) {
  if (attempt == 0)
    return UV_EINVAL;
  int rc = check_submit(s, item);
  if (rc < 0)
    return rc;
  item->attempt = attempt;
  int64_t wait = not_before_wall_ms - rx_wall_ms();
  if (wait <= 0) {
    queue_item(s, item);
  } else {
    rc = wait_item(s, item, (uint64_t)wait);
    if (rc < 0) {
      item->_s = NULL;
      return rc;
    }
  }
  kick(s);
  return 0;
}

void pl_sched_cancel(struct pl_sched_item *item) {
  struct pl_sched *s = item ? item->_s : NULL;
  if (s == NULL)
    return;
  switch (item->_state) {
    case ST_QUEUED:
      heap_remove(&s->ready, item);
      release(s, item);
      break;
    case ST_WAITING:
      heap_remove(&s->waiting, item);
      release(s, item);
      break;
    case ST_FLIGHT:
      if (!item->_cancel) {
        item->_cancel = 1;
        s->sink->ops->cancel(s->sink, item->d);
      }
      break;
    default:
      break;
  }
}

void pl_sched_stats(const struct pl_sched *s, struct pl_sched_stats *out) {
  uint64_t now = rx_now_ms(s->loop);
  *out = (struct pl_sched_stats){
      .queued = s->ready.len,
      .waiting = s->waiting.len,
      .in_flight = s->n_flight,
      .delivered = s->n_delivered,
      .skipped = s->n_skipped,
      .dead = s->n_dead,
      .retried = s->n_retried,
      .cancelled = s->n_cancelled,
      .pauses = s->n_pauses,
      .paused_until_ms = s->pause_until > now ? rx_wall_ms() + (int64_t)(s->pause_until - now) : 0,
      .window = limit(s),
      .loans = s->n_loans,
  };
}

void pl_sched_close(struct pl_sched *s, void (*cb)(void *arg), void *arg) {
  if (s == NULL || s->closing)
    return;
  s->closing = 1;
  s->close_cb = cb;
  s->close_arg = arg;
  arm(s, NEVER);
  struct heap *held[] = {&s->ready, &s->waiting};
  for (size_t h = 0; h < 2; h++) {
    for (size_t i = 0; i < held[h]->len; i++) {
      held[h]->v[i].it->_state = ST_RELEASED;
      list_push(&s->released, held[h]->v[i].it);
    }
    held[h]->len = 0;
  }
  for (struct pl_sched_item *it = s->flight.head; it; it = it->_next) {
    if (!it->_cancel) {
      it->_cancel = 1;
      s->sink->ops->cancel(s->sink, it->d);
    }
  }
  kick(s);
}

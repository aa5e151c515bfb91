/*
 * station_bridge._fastpath: the flat-record hot path in C (receive, decode, map, format).
 *
 * One call takes a burst of messages (straight from libzmq, or as frames pyzmq received) and
 * returns their lines of line protocol as ONE bytes object, in message order. It handles only
 * the common shape, exactly as the Python mapper does; the first message it is not sure about
 * (anything unusual: a type, an escape, a range, a framing) ends the call and is handed back
 * untouched, so that the Python path maps it or names its reason, and the next call goes on
 * after it. Order, counts and the uniqueness state are therefore those of the Python path.
 *
 * The GIL: each batch is received and formatted without it, then committed with it ("Two phases",
 * below, which also states who owns a plan and its socket meanwhile).
 *
 * libzmq is not linked: the addresses of zmq_msg_* come from the libzmq that pyzmq loaded
 * (fastpath.py finds them), and the socket is pyzmq's own (`Socket.underlying`).
 * Built against the stable ABI (Py_LIMITED_API, Python >= 3.11): one wheel for 3.11 and later.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <locale.h>
#include <stdlib.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* ---- libzmq, by address ------------------------------------------------------------------- */

/* zmq_msg_t as libzmq >= 4.1 declares it (64 bytes); fastpath.py checks the bound libzmq's
 * major version and probes that its zmq_msg_init_size writes within MSG_T_SIZE bytes. */
typedef struct { unsigned char _[64]; } __attribute__((aligned(8))) zmsg_t;
_Static_assert(sizeof(zmsg_t) == 64, "zmq_msg_t is 64 bytes");
typedef int (*msg_init_f)(zmsg_t *);
typedef int (*msg_recv_f)(zmsg_t *, void *, int);
typedef void *(*msg_data_f)(zmsg_t *);
typedef size_t (*msg_size_f)(const zmsg_t *);
typedef int (*msg_more_f)(const zmsg_t *);
typedef int (*msg_close_f)(zmsg_t *);
typedef int (*errno_f)(void);

static struct {
    msg_init_f init; msg_recv_f recv; msg_data_f data; msg_size_f size;
    msg_more_f more; msg_close_f close; errno_f err;
} zmq_api;

#define ZMQ_DONTWAIT_ 1
#define ZMQ_EAGAIN_ EAGAIN

/* ---- growable byte buffer ----------------------------------------------------------------- */

/* libc allocator (PyMem_* needs the GIL; PyMem_Raw* is not in the limited API); `quiet`: the buffer is written without
 * the GIL (the staging buffer), so a failure sets no Python error (the message is redone with it). */
typedef struct { char *p; Py_ssize_t len, cap; int quiet; } buf_t;

static int buf_grow(buf_t *b, Py_ssize_t need) {
    if (b->len + need <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) { if (!b->quiet) PyErr_NoMemory(); return -1; }
    b->p = p; b->cap = cap;
    return 0;
}

static inline int buf_put(buf_t *b, const char *s, Py_ssize_t n) {
    if (n <= 0) return 0;  /* memcpy(NULL, ..., 0) is undefined: an empty buffer has no p yet */
    if (b->len + n > b->cap && buf_grow(b, n) < 0) return -1;  /* the call only when it grows */
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static inline int buf_putc(buf_t *b, char c) {
    if (b->len + 1 > b->cap && buf_grow(b, 1) < 0) return -1;
    b->p[b->len++] = c;
    return 0;
}

static const char DIGITS2[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* u in decimal, ending just before `end`, two digits a step; returns its first character. */
static char *put_u64_rev(char *end, uint64_t u) {
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100);
        u /= 100;
        end -= 2;
        memcpy(end, DIGITS2 + 2 * r, 2);
    }
    if (u >= 10) {
        end -= 2;
        memcpy(end, DIGITS2 + 2 * u, 2);
    } else {
        *--end = (char)('0' + u);
    }
    return end;
}

static int buf_put_int(buf_t *b, int64_t v) {
    char tmp[24];
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char *p = put_u64_rev(tmp + 24, u);
    if (v < 0) *--p = '-';
    return buf_put(b, p, tmp + 24 - p);
}

/* ---- UTF-8, strictly as Python decodes it (no surrogates, no overlongs, <= U+10FFFF) ------ */

static int utf8_valid(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n) return 0;
            unsigned char c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && c1 < 0xA0) return 0;  /* overlong */
            if (c == 0xED && c1 > 0x9F) return 0;  /* surrogates */
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n) return 0;
            unsigned char c1 = s[i + 1];
            if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80) return 0;
            if (c == 0xF0 && c1 < 0x90) return 0;
            if (c == 0xF4 && c1 > 0x8F) return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* ---- record values ------------------------------------------------------------------------ */

enum { V_ABSENT = 0, V_NIL, V_BOOL, V_INT, V_FLOAT, V_STR, V_OTHER };

typedef struct {
    int type;
    int64_t i;      /* V_BOOL (0/1), V_INT */
    double d;       /* V_FLOAT */
    const char *s;  /* V_STR: valid UTF-8 */
    Py_ssize_t n;
} val_t;

#define MAX_SLOTS 32
#define SLOT_HINTS 64  /* key positions of a flat record whose slot is remembered (slot_hint) */
#define MAX_TAGS 32
#define MAX_FIELDS 32
#define MAX_ORDER 64

enum { K_FLOAT = 0, K_INTEGER = 1, K_STRING = 2, K_BOOLEAN = 3 };
enum { F_MSGPACK = 0, F_DELIMITED = 1, F_JSON = 2, F_TEXT_JSON = 3 };
#define MULTIPART(f) ((f) == F_MSGPACK || (f) == F_JSON)
enum { R_EXACT = 0, R_PRODUCT = 1 };
enum { U_WINDOW = 0, U_LAST = 1 };

enum { T_RECORD = 0, T_STATIC = 1, T_DERIVED = 2, T_TOPIC = 3, T_CAPTURE = 4 };  /* T_CAPTURE: a T_RECORD of a capture's slot */

typedef struct {
    int kind;           /* T_RECORD: a record key; T_STATIC; T_DERIVED / T_TOPIC: a part the
                         * mapper's own rule made (a text cache, below) */
    int slot;           /* T_RECORD: the record key */
    int src, group;     /* T_DERIVED: derived source and group; T_TOPIC: group */
    char *part;         /* static: ",k=v"; record: ",k=" */
    Py_ssize_t part_n;
    char *dflt;         /* T_RECORD: ",k=<escaped default>" for an absent or empty value, or NULL */
    Py_ssize_t dflt_n;
    int optional;       /* record: an absent value leaves the tag out (else: hand back) */
} tag_t;

/* Text -> the tag parts the mapper's own rule makes of it (derived tags of a source's text, the
 * topic's tags), cached: the rule is Python (Mapper._derived_pairs, Mapper._tag_pair: the same
 * code the Python path runs), called once per distinct text. An entry holds the text, then each
 * group's part (",k=v", or empty: left out); `back`: the rule refused the text (hand back). */
#define MAX_GROUPS 16
#define TCACHE_SIZE 1024
#define TCACHE_MAX_KEY 256
typedef struct {
    uint64_t hash; Py_ssize_t key_n; int used, back;
    char *data;                    /* key_n bytes of text, then the parts */
    Py_ssize_t off[MAX_GROUPS + 1];  /* part g: data + key_n + off[g], off[g + 1] - off[g] bytes */
} tentry_t;

typedef struct {
    PyObject *rule;    /* rule(text or None) -> tuple of bytes (one per group) or None (refused) */
    int ngroups;
    tentry_t *table;   /* TCACHE_SIZE entries */
    int used;
    tentry_t absent;   /* the rule of None (an absent value), once */
    tentry_t scratch;  /* a text too long to cache */
} tcache_t;

#define MAX_DERIVED 8

/* Paths into nested values (`quote.bid`, `levels[0]`): a trie of key and index steps from the
 * record; a node where a path ends holds its slot. Only with `nested` (else every slot is one
 * top-level key and the flat parsers run). */
#define MAX_NODES 96
#define MAX_DEPTH 32
typedef struct {
    int slot;                 /* a path ends here: its slot (-1: none) */
    int child, next;          /* first child, next sibling (-1: none) */
    int by_index;             /* reached by an index step (else by a key) */
    int64_t index;            /* that index (negative: from the end) */
    char *key; Py_ssize_t key_n;
    int keys, indexes;        /* children by key, by index */
} node_t;

typedef struct {
    int slot;
    char *prefix;       /* ",k=" */
    Py_ssize_t prefix_n;
    int kind;
    PyObject *name;     /* the field's name (the cache's key; its record key may differ) */
} field_t;

/* `each` (several points per message): the each path's steps, walked from the record; every
 * element it reaches is one row. Sources relative to the element are a second trie (root
 * `eroot`), filled per element; `$`-rooted ones are the record's trie (root 0), filled once.
 * Captures are slots holding the captured key (or the list index as decimal text) of their
 * step. Python's reference: paths.compile_paths (PathSet.rows), mapping.Mapper._map_rows. */
#define MAX_EACH 8       /* steps of the each path (fastpath.py checks it at plan time) */
#define MAX_CAPTURES 8
#define EACH_ENTRIES_MAX (1 << 16)  /* entries of one container the walk looks at; beyond: hand back */
#define EACH_KEEP 4096              /* entries (and dup slots) kept between messages; more is freed */
enum { E_KEY = 0, E_INDEX = 1, E_ITEMS = 2, E_KEYS = 3 };
typedef struct {
    int kind;
    char *key; Py_ssize_t key_n;   /* E_KEY */
    int64_t index;                 /* E_INDEX (negative: from the end) */
    int capture;                   /* E_ITEMS, E_KEYS: the capture's slot, or -1 (not captured) */
    int nonly; char **only; Py_ssize_t *only_n;  /* E_KEYS: only these keys, in this order (0: every key) */
} estep_t;
/* A container's entries (a map's keys with their values, a list's elements), found by the walk. */
typedef struct { const char *k; Py_ssize_t kn; const char *v, *vend; } entry_t;
typedef struct { entry_t *e; Py_ssize_t n, cap; } elist_t;
/* Before each row's line in a buffer (the rows of one message follow each other): its series and
 * line length, its time (or draw the clock), then `extra_n` bytes of its field values (newest). */
typedef struct { Py_ssize_t series_n, line_n, extra_n; int64_t ts; int clock; } rowhdr_t;

/* The series key -> str cache (the uniqueness state is keyed by str). */
#define SCACHE_SIZE 4096
#define SCACHE_MAX_KEY 240
typedef struct { uint64_t hash; Py_ssize_t n; char key[SCACHE_MAX_KEY]; PyObject *str; } sentry_t;

/* Newest point per series within one call (for the latest-value cache). A slot's payload
 * buffer larger than NEWEST_KEEP is freed at the end of the call: kept, every slot held the
 * largest payload it ever copied (2,000 series per burst and 1 MiB frames: 2 GiB). */
#define NEWEST_KEEP 1024
typedef struct { PyObject *series; int64_t ts; char *payload; Py_ssize_t n, cap; int used; } newest_t;

/* A message of a batch: staged without the GIL (Plan.stage_zmq, Plan.stage_frames), committed
 * with it (Plan.commit). The block "Two phases" below says how. */
enum { S_LINE = 0, S_GIL = 1, S_BACK = 2 };

/* The uniqueness window's common case, claimed in C (claim_time): per series met in this call,
 * its window array (Uniqueness.current[series], an array('q')), the array's length when read,
 * the length and last time it has once the times claimed since are in, and those times. They
 * go into the array (uniq_settle: one frombytes and at most one del per series) before anything
 * that may claim runs in Python (Uniqueness.claim, the Python path of a message handed back) and
 * before the call returns: Python never sees the window without them. */
#define UPEND_MAX 256
#define UPEND_SLOTS 512  /* the index by the series' address: open addressing, at most half full */
typedef struct {
    PyObject *series, *times;  /* strong references while pending */
    Py_ssize_t len0, len;      /* the array's length when read; with the pending times, trimmed */
    int64_t last;              /* the window's last time, pending ones included */
    int64_t *add; Py_ssize_t nadd, cap;  /* the times claimed since, in order */
} upend_t;
#define STAGE_MAX 256
typedef struct {
    int kind;                      /* S_LINE: formatted up to its time; S_GIL: map it again with the
                                    * GIL; S_BACK: hand it back */
    Py_ssize_t at, series_n, line_n;  /* S_LINE: series and fields at stage.p + at (each: the rows) */
    Py_ssize_t rows;               /* S_LINE with each: how many rows (rowhdr_t, line, extra) */
    int64_t ts; int clock;         /* S_LINE: its time, or draw the receive clock */
    const char *topic, *payload; Py_ssize_t topic_n, payload_n;  /* the frames (valid until commit ends) */
    zmsg_t m[2]; int have;         /* stage_zmq: the frames libzmq holds */
    zmsg_t *extra; int nextra;     /* stage_zmq: frames past the second (the message goes back) */
    PyObject *message;             /* stage_frames: the message as given (handed back as it is) */
    PyObject *f[2];                /* stage_frames: its frames, held while the GIL is released */
} rec_t;

typedef struct {
    PyObject_HEAD
    int framing;
    Py_ssize_t max_frame;
    char *measurement; Py_ssize_t measurement_n;
    int nslots; char *slot_key[MAX_SLOTS]; Py_ssize_t slot_n[MAX_SLOTS];
    PyObject *slot_name[MAX_SLOTS];
    /* the slot (+1; 0: none known) the key at each position of the last flat record had: a feed's
     * records keep their keys' order, so the first comparison usually finds it (find_slot_at) */
    signed char slot_hint[SLOT_HINTS];
    int ntags; tag_t tags[MAX_TAGS];
    int nderived; int derived_slot[MAX_DERIVED]; tcache_t derived[MAX_DERIVED];
    int nested; int nnodes; node_t nodes[MAX_NODES];
    uint32_t gen; uint32_t seen[MAX_NODES];  /* a key met in this record (duplicates go back) */
    tcache_t *topic;   /* topic tags (NULL: none) */
    int nfields; field_t fields[MAX_FIELDS];
    /* each (0: one point per message) */
    int each, neach, eroot; estep_t esteps[MAX_EACH]; Py_ssize_t max_points;
    Py_ssize_t max_each_bytes;     /* a message's rows may hold this many bytes here (mapping.max_bytes; 0: unbounded) */
    Py_ssize_t in_bytes, in_largest;  /* the last stage_zmq's messages: their bytes, the largest's (received_bytes) */
    int slot_elem[MAX_SLOTS];      /* the slot is read from the element (reset per element) */
    int ncaptures; int capture_slot[MAX_CAPTURES]; char cap_text[MAX_CAPTURES][24];
    elist_t elists[MAX_EACH]; Py_ssize_t *dup; Py_ssize_t dup_cap;
    buf_t rows;                    /* one(): a message's rows, before they are finished into out */
    int time_slot; int64_t time_unit; int time_rule;  /* time_unit -1: a date string (time_parse) */
    PyObject *time_parse;  /* the mapper's parser of date strings (rfc3339, naive) */
    PyObject *clock;       /* the mapper's receive clock (no time field), or NULL */
    Py_ssize_t key_check;
    int uniq_mode; PyObject *uniq_state; PyObject *uniq_claim;
    int64_t tmin, tmax; Py_ssize_t trim, window;
    upend_t *upend; int upend_used; uint16_t upend_index[UPEND_SLOTS];  /* entry + 1; 0: free */
    int64_t ahead, behind;  /* the window around the receive time (ns); -1: unbounded */
    int norder; int order_slot[MAX_ORDER];
    char *delim; Py_ssize_t delim_n;
    /* working state */
    buf_t out;
    sentry_t *scache; int scache_used;
    newest_t *newest; int newest_cap, newest_used;
    char *last_topic; Py_ssize_t last_topic_n, last_topic_cap;
    int64_t handled, handed_back;
    /* a batch between its stage and its commit (one thread: owner) */
    buf_t stage; rec_t *recs; int nrecs; int busy; unsigned long owner;
    int64_t with_gil;  /* staged messages mapped again with the GIL (S_GIL) */
    /* the receive-time window's clock: read once per NOW_EVERY points within one call (map, drain,
     * a stage), never carried from one call to the next (now_left = 0 at each start) */
    int64_t now_ns; int now_left;
} Plan;

static PyObject *str_append, *str_frombytes;
static locale_t c_locale;  /* text_float: numbers as the C locale reads them, whatever LC_NUMERIC is */

/* ---- msgpack ------------------------------------------------------------------------------ */

static inline uint16_t be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t be64(const unsigned char *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

/* The one rule for integers, in every framing: C takes an integer of at most 18 decimal digits
 * (|v| < 10^18); any longer one, in a key the mapping uses or ignores, hands the message back
 * and Python decides (its int parsing limits, its ranges, its reasons). */
#define INT_DIGITS_MAX 18
#define NOW_EVERY 64  /* points per clock read of the receive-time window (point_time) */
#define INT_ABS_LIMIT 1000000000000000000LL  /* 10^18 */
static inline int int_too_long(int64_t v) { return v >= INT_ABS_LIMIT || v <= -INT_ABS_LIMIT; }

/* A str's bytes at p (< end), without a UTF-8 check (mp_value makes it): bytes used, or -1 (not
 * a str, truncated). */
static inline Py_ssize_t mp_str_raw(const unsigned char *p, const unsigned char *end, const char **s,
                                    Py_ssize_t *n) {
    Py_ssize_t avail = end - p, len, hdr;
    unsigned char c = p[0];
    if (c >= 0xa0 && c <= 0xbf) { len = c & 0x1f; hdr = 1; }
    else if (c == 0xd9 && avail >= 2) { len = p[1]; hdr = 2; }
    else if (c == 0xda && avail >= 3) { len = be16(p + 1); hdr = 3; }
    else if (c == 0xdb && avail >= 5) { len = be32(p + 1); hdr = 5; }
    else return -1;
    if (avail - hdr < len) return -1;
    *s = (const char *)p + hdr; *n = len;
    return hdr + len;
}

/* One scalar at p (< end): fills v, returns bytes used, or -1 (hand back: nested, ext, reserved,
 * truncated, invalid UTF-8, an integer of more than 18 digits). */
static Py_ssize_t mp_value(const unsigned char *p, const unsigned char *end, val_t *v) {
    Py_ssize_t avail = end - p;
    unsigned char c = p[0];
    Py_ssize_t len, hdr;
    if (c <= 0x7f) { v->type = V_INT; v->i = c; return 1; }
    if (c >= 0xe0) { v->type = V_INT; v->i = (int8_t)c; return 1; }
    if ((c >= 0xa0 && c <= 0xbf) || (c >= 0xd9 && c <= 0xdb)) goto str;
    switch (c) {
    case 0xc0: v->type = V_NIL; return 1;
    case 0xc2: v->type = V_BOOL; v->i = 0; return 1;
    case 0xc3: v->type = V_BOOL; v->i = 1; return 1;
    case 0xcc: if (avail < 2) return -1; v->type = V_INT; v->i = p[1]; return 2;
    case 0xcd: if (avail < 3) return -1; v->type = V_INT; v->i = be16(p + 1); return 3;
    case 0xce: if (avail < 5) return -1; v->type = V_INT; v->i = be32(p + 1); return 5;
    case 0xcf: {
        if (avail < 9) return -1;
        uint64_t u = be64(p + 1);
        if (u >= (uint64_t)INT_ABS_LIMIT) return -1;  /* 19 digits or more: Python decides */
        v->type = V_INT; v->i = (int64_t)u; return 9;
    }
    case 0xd0: if (avail < 2) return -1; v->type = V_INT; v->i = (int8_t)p[1]; return 2;
    case 0xd1: if (avail < 3) return -1; v->type = V_INT; v->i = (int16_t)be16(p + 1); return 3;
    case 0xd2: if (avail < 5) return -1; v->type = V_INT; v->i = (int32_t)be32(p + 1); return 5;
    case 0xd3:
        if (avail < 9) return -1;
        v->type = V_INT; v->i = (int64_t)be64(p + 1);
        return int_too_long(v->i) ? -1 : 9;  /* 19 digits: Python decides */
    case 0xca: {
        if (avail < 5) return -1;
        uint32_t u = be32(p + 1); float f; memcpy(&f, &u, 4);
        v->type = V_FLOAT; v->d = (double)f; return 5;
    }
    case 0xcb: {
        if (avail < 9) return -1;
        uint64_t u = be64(p + 1); double d; memcpy(&d, &u, 8);
        v->type = V_FLOAT; v->d = d; return 9;
    }
    case 0xc4: if (avail < 2) return -1; len = p[1]; hdr = 2; goto bin;
    case 0xc5: if (avail < 3) return -1; len = be16(p + 1); hdr = 3; goto bin;
    case 0xc6: if (avail < 5) return -1; len = be32(p + 1); hdr = 5; goto bin;
    default: return -1;  /* arrays, maps, ext, 0xc1 */
    }
str: {
    Py_ssize_t used = mp_str_raw(p, end, &v->s, &v->n);
    if (used < 0 || !utf8_valid((const unsigned char *)v->s, v->n)) return -1;
    v->type = V_STR;
    return used;
}
bin:
    if (avail - hdr < len) return -1;
    v->type = V_OTHER;
    return hdr + len;
}

static inline int find_slot(Plan *pl, const char *k, Py_ssize_t n) {
    for (int s = 0; s < pl->nslots; s++)
        if (pl->slot_n[s] == n && memcmp(pl->slot_key[s], k, n) == 0) return s;
    return -1;
}

/* find_slot for the key at position `at` of a flat record: the slot that position's key had in
 * the last record is tried first (slot keys are distinct: the same answer as find_slot). */
static inline int find_slot_at(Plan *pl, const char *k, Py_ssize_t n, uint32_t at) {
    if (at < SLOT_HINTS) {
        int h = pl->slot_hint[at] - 1;
        if (h >= 0 && pl->slot_n[h] == n && memcmp(pl->slot_key[h], k, n) == 0) return h;
    }
    int s = find_slot(pl, k, n);
    if (at < SLOT_HINTS) pl->slot_hint[at] = (signed char)(s + 1);
    return s;
}

/* 0: record read into vals; 1: hand back. */
static int mp_record(Plan *pl, const unsigned char *p, Py_ssize_t n, val_t *vals) {
    const unsigned char *end = p + n;
    if (n < 1) return 1;
    uint32_t count;
    unsigned char c = p[0];
    if (c >= 0x80 && c <= 0x8f) { count = c & 0x0f; p += 1; }
    else if (c == 0xde) { if (n < 3) return 1; count = be16(p + 1); p += 3; }
    else if (c == 0xdf) { if (n < 5) return 1; count = be32(p + 1); p += 5; }
    else return 1;
    for (int s = 0; s < pl->nslots; s++) vals[s].type = V_ABSENT;
    val_t tmp;
    for (uint32_t e = 0; e < count; e++) {
        if (p >= end) return 1;
        const char *k;
        Py_ssize_t kn, used = mp_str_raw(p, end, &k, &kn);
        if (used < 0) return 1;  /* only str keys on this path */
        p += used;
        if (p >= end) return 1;
        int s = find_slot_at(pl, k, kn, e);
        if (s < 0 && !utf8_valid((const unsigned char *)k, kn)) return 1;  /* a slot's key is valid UTF-8 */
        if (s >= 0) {
            if (vals[s].type != V_ABSENT) return 1;  /* a duplicate key: the Python path decides */
            used = mp_value(p, end, &vals[s]);
        } else {
            used = mp_value(p, end, &tmp);
        }
        if (used < 0) return 1;
        p += used;
    }
    return p == end ? 0 : 1;  /* trailing bytes: msgpack's ExtraData */
}

/* ---- numbers in text ---------------------------------------------------------------------- */

/* JSON's integer grammar `-?(0|[1-9][0-9]*)` (ASCII) of at most 18 digits (fits int64); what
 * int() of it gives. Anything else (a plus sign, leading zeros, padding): -1, hand back, and the
 * Python path decides (lineproto.JSON_INTEGER refuses it wrong_type). */
static int text_int(const char *s, Py_ssize_t n, int64_t *out) {
    Py_ssize_t i = 0;
    int neg = 0;
    if (n > 0 && s[0] == '-') { neg = 1; i = 1; }
    if (i >= n || n - i > INT_DIGITS_MAX) return -1;
    if (s[i] == '0' && n - i > 1) return -1;
    int64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

/* JSON's number grammar `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?` (ASCII, at most 64 chars):
 * what float() of it gives (same correctly rounded conversion). Anything else: -1, hand back
 * (lineproto.JSON_NUMBER refuses it; a time string goes to timestamps.py's own grammar). */
static int text_float(const char *s, Py_ssize_t n, double *out) {
    char tmp[72];
    if (n < 1 || n > 64) return -1;
    Py_ssize_t i = 0, digits = 0;
    if (s[0] == '-') i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') { i++; digits++; }
    if (!digits || (digits > 1 && s[i - digits] == '0')) return -1;
    if (digits > INT_DIGITS_MAX) return -1;  /* an integer literal of 19+ digits: Python decides */
    if (i < n && s[i] == '.') {
        Py_ssize_t fraction = 0;
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') { i++; fraction++; }
        if (!fraction) return -1;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        Py_ssize_t e = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') { i++; e++; }
        if (!e) return -1;
    }
    if (i != n) return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    char *endp = NULL;
    /* strtod in the C locale (glibc's is correctly rounded, as Python's float() is), not
     * PyOS_string_to_double: Python's dtoa needs the GIL, and this runs without it */
    double d = strtod_l(tmp, &endp, c_locale);
    if (endp != tmp + n) return -1;
    *out = d;
    return 0;
}

/* ---- times -------------------------------------------------------------------------------- */

#define NS_MIN (INT64_MIN + 2)
#define NS_MAX (INT64_MAX - 1)

typedef unsigned __int128 u128;

/* round(m * unit / 2^s) to nearest, ties to even (m * unit < 2^83). */
static uint64_t shift_round(u128 x, int s, int *overflow) {
    if (s <= 0) {
        if (s < -40 || (x >> (63 + s)) != 0) { *overflow = 1; return 0; }
        return (uint64_t)(x << -s);
    }
    if (s >= 127) return 0;
    u128 q = x >> s, r = x & (((u128)1 << s) - 1), half = (u128)1 << (s - 1);
    if (r > half || (r == half && (q & 1))) q++;
    if (q >> 63) { *overflow = 1; return 0; }
    return (uint64_t)q;
}

/* The exact rule: the float's exact binary value times unit, rounded half to even. */
static int float_exact_ns(double v, int64_t unit, int64_t *out) {
    if (!isfinite(v)) return -1;
    if (v == 0.0) { *out = 0; return 0; }
    int e;
    double m = frexp(fabs(v), &e);         /* |v| = m * 2^e, 0.5 <= m < 1 */
    uint64_t mi = (uint64_t)ldexp(m, 53);  /* exact: 53-bit integer */
    e -= 53;                               /* |v| = mi * 2^e */
    int overflow = 0;
    uint64_t r = shift_round((u128)mi * (u128)unit, -e, &overflow);
    if (overflow) return -1;
    int64_t ns = v < 0 ? -(int64_t)r : (int64_t)r;
    if (ns < NS_MIN || ns > NS_MAX) return -1;
    *out = ns;
    return 0;
}

/* The product rule (round(x * unit) of the double product, as the mapping did before). */
static int float_product_ns(double v, int64_t unit, int64_t *out) {
    double x = v * (double)unit;
    if (!isfinite(x) || fabs(x) >= 9.2e18) return -1;
    *out = (int64_t)nearbyint(x);
    return 0;
}

static int int_ns(int64_t v, int64_t unit, int64_t *out) {
    int64_t r;
    if (__builtin_mul_overflow(v, unit, &r)) return -1;
    *out = r;
    return 0;
}

/* `[+-]?[0-9]*(.[0-9]*)?` with a digit (the exact rule's decimal text): 0 ok. unit 0: auto. */
static int text_exact_ns(const char *s, Py_ssize_t n, int64_t unit, int64_t *out) {
    if (n < 1 || n > 64) return -1;
    Py_ssize_t i = 0;
    int neg = 0;
    if (s[0] == '+' || s[0] == '-') { neg = s[0] == '-'; i = 1; }
    u128 whole = 0, num = 0, den = 1;
    int wd = 0, fd = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (++wd > INT_DIGITS_MAX) return -1;  /* 19+ digits: Python decides */
        whole = whole * 10 + (u128)(s[i] - '0');
        i++;
    }
    num = whole;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (++fd > 9) return -1;
            num = num * 10 + (u128)(s[i] - '0');
            den *= 10;
            i++;
        }
    }
    if (i != n || (wd + fd) == 0) return -1;
    if (unit == 0) {
        unit = whole < (u128)100000000000ULL ? 1000000000 : whole < (u128)100000000000000ULL ? 1000000
             : whole < (u128)100000000000000000ULL ? 1000 : 1;
    }
    u128 x = num * (u128)unit, q = x / den, r = x % den;
    if (2 * r > den || (2 * r == den && (q & 1))) q++;
    if (q > (u128)NS_MAX) return -1;  /* NS_MIN is -(NS_MAX + 1): symmetric enough to refuse both */
    int64_t ns = (int64_t)q;
    *out = neg ? -ns : ns;
    return 0;
}

static inline int dig(char c) { return c >= '0' && c <= '9' ? c - '0' : -1; }
static int num2(const char *s) {
    int a = dig(s[0]), b = dig(s[1]);
    return a < 0 || b < 0 ? -1 : a * 10 + b;
}

/* timestamps._parse_text for the common shape only: `YYYY-MM-DD[Tt ]HH:MM:SS[.f]` with at most 9
 * fraction digits and an offset (`Z`, `z`, `+HH:MM`, `+HHMM`), a year within InfluxDB's range
 * (1678..2261), a valid date and time of day. 0: *out set; -1: the mapper's parser decides (a
 * zone, more digits, anything it refuses or reads otherwise). */
static int rfc3339_ns(const char *s, Py_ssize_t n, int64_t *out) {
    static const int month_days[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n < 20 || n > 64) return -1;
    int y1 = num2(s), y2 = num2(s + 2), mo = num2(s + 5), d = num2(s + 8);
    int h = num2(s + 11), mi = num2(s + 14), se = num2(s + 17);
    if (y1 < 0 || y2 < 0 || mo < 0 || d < 0 || h < 0 || mi < 0 || se < 0) return -1;
    if (s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' || s[16] != ':')
        return -1;
    int y = y1 * 100 + y2;
    Py_ssize_t i = 19;
    int64_t frac = 0;
    if (i < n && s[i] == '.') {
        int fd = 0;
        for (i++; i < n && dig(s[i]) >= 0; i++) {
            if (++fd > 9) return -1;
            frac = frac * 10 + dig(s[i]);
        }
        if (!fd) return -1;
        for (int k = fd; k < 9; k++) frac *= 10;
    }
    int64_t offset;  /* seconds to add */
    if (i + 1 == n && (s[i] == 'Z' || s[i] == 'z')) {
        offset = 0;
    } else if (i < n && (s[i] == '+' || s[i] == '-') && (n - i == 6 || n - i == 5)) {
        int oh = num2(s + i + 1), om = num2(s + n - 2);
        if (oh < 0 || om < 0 || (n - i == 6 && s[i + 3] != ':') || oh > 23 || om > 59) return -1;
        offset = (int64_t)(oh * 3600 + om * 60) * (s[i] == '+' ? -1 : 1);
    } else {
        return -1;
    }
    if (y < 1678 || y > 2261 || mo < 1 || mo > 12 || h > 23 || mi > 59 || se > 59) return -1;
    int leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    if (d < 1 || d > (mo == 2 && leap ? 29 : month_days[mo])) return -1;
    int64_t yy = y - (mo <= 2);
    int64_t era = yy / 400, yoe = yy - era * 400;  /* yy > 0: no floor needed */
    int64_t doy = (153 * (mo > 2 ? mo - 3 : mo + 9) + 2) / 5 + d - 1;
    int64_t days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    int64_t seconds = days * 86400 + h * 3600 + mi * 60 + se + offset;
    __int128 ns = (__int128)seconds * 1000000000 + frac;
    if (ns < NS_MIN || ns > NS_MAX) return -1;
    *out = (int64_t)ns;
    return 0;
}

static int64_t auto_unit_double(double v) {
    double a = fabs(v);
    return a < 1e11 ? 1000000000 : a < 1e14 ? 1000000 : a < 1e17 ? 1000 : 1;
}

/* The point's time from its value; 0 ok, -1 hand back, 2 (nogil) needs the GIL (the mapper's
 * parser of date strings). */
static int point_time(Plan *pl, const val_t *v, int64_t *ts, int nogil) {
    int64_t unit = pl->time_unit;  /* 0: auto */
    if (unit < 0) {  /* a date string: the mapper's own parser (anything it refuses goes back) */
        if (v->type != V_STR || !pl->time_parse) return -1;
        if (rfc3339_ns(v->s, v->n, ts) == 0) goto checks;
        if (nogil) return 2;
        PyObject *text = PyUnicode_DecodeUTF8(v->s, v->n, "strict");
        if (!text) { PyErr_Clear(); return -1; }
        PyObject *r = PyObject_CallFunctionObjArgs(pl->time_parse, text, NULL);
        Py_DECREF(text);
        if (!r) { PyErr_Clear(); return -1; }
        int over = 0;
        long long x = PyLong_Check(r) ? PyLong_AsLongLongAndOverflow(r, &over) : -1;
        Py_DECREF(r);
        if (PyErr_Occurred()) { PyErr_Clear(); return -1; }
        if (over) return -1;
        *ts = x;
        goto checks;
    }
    switch (v->type) {
    case V_INT: {
        int64_t u = unit;
        if (u == 0) {
            uint64_t a = v->i < 0 ? (uint64_t)0 - (uint64_t)v->i : (uint64_t)v->i;
            u = a < 100000000000ULL ? 1000000000 : a < 100000000000000ULL ? 1000000 : a < 100000000000000000ULL ? 1000 : 1;
        }
        if (int_ns(v->i, u, ts) < 0) return -1;
        break;
    }
    case V_FLOAT: {
        int64_t u = unit ? unit : auto_unit_double(v->d);
        if (!isfinite(v->d)) return -1;
        if (pl->time_rule == R_EXACT) {
            if (float_exact_ns(v->d, u, ts) < 0) return -1;
        } else {
            if (u == 1) return -1;  /* epoch_ns floats (and auto beyond 1e17) stay with Python */
            if (float_product_ns(v->d, u, ts) < 0) return -1;
        }
        break;
    }
    case V_STR: {
        if (pl->time_rule == R_EXACT) {
            if (text_exact_ns(v->s, v->n, unit, ts) < 0) return -1;
        } else {
            /* before exact times, only `auto` read text: `[0-9]*.?[0-9]*` through float() */
            if (unit != 0 || v->n < 1 || v->n > 40) return -1;
            int dot = 0, digits = 0;
            for (Py_ssize_t k = 0; k < v->n; k++) {
                char ch = v->s[k];
                if (ch == '.' && !dot) dot = 1;
                else if (ch >= '0' && ch <= '9') digits++;
                else return -1;
            }
            if (!digits) return -1;
            double d;
            if (text_float(v->s, v->n, &d) < 0) return -1;
            int64_t u = auto_unit_double(d);
            if (u == 1 || float_product_ns(d, u, ts) < 0) return -1;
        }
        break;
    }
    default:
        return -1;  /* missing (receive time), nil, bool, other: the Python path */
    }
checks:
    if (*ts < pl->tmin || *ts > pl->tmax) return -1;
    if (pl->ahead >= 0 || pl->behind >= 0) {
        /* outside the window around the receive time: Python refuses it (Mapper.check_window) */
        if (pl->now_left-- <= 0) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            pl->now_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
            pl->now_left = NOW_EVERY - 1;
        }
        __int128 delta = (__int128)*ts - (__int128)pl->now_ns;
        if ((pl->ahead >= 0 && delta > pl->ahead) || (pl->behind >= 0 && -delta > pl->behind)) return -1;
    }
    return 0;
}

/* ---- formatting --------------------------------------------------------------------------- */

static const double POW10[16] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13,
                                  1e14, 1e15};
#define TWO50 1125899906842624.0

/* repr(d) without dtoa for the common case, 1e-4 <= |d| < 2^50 with at most 15 decimals: the
 * fewest decimals k for which an integer M has M / 10^k == d (IEEE division is correctly
 * rounded, so this is exactly "the decimal M.10^-k reads back as d"). Below 2^50 at most one M
 * per k can read back (the decimals are 10^-k apart, d's rounding interval is narrower), and
 * it lies within 1 of the rounded product d * 10^k: so M is the digits repr picks, which are
 * the shortest that read back, and repr writes them without exponent in this range.
 * Only an integer within m.2^-52 of the product can read back (10^k is exact for k <= 15, the
 * division and the product each round once, m < 2^50): never r - 1 or r + 1, which are 0.5 or
 * more away, and r only within p.2^-50 (a margin of 4), so most k cost no division. r is
 * nearbyint(p) in the default rounding mode without a libm call (p + 2^52 rounds to an integer,
 * ties to even, for 0 <= p < 2^50). Returns the length written to out (>= 32 bytes), or 0: use dtoa. */
static int short_repr(double d, char *out) {
    double a = fabs(d);
    if (!(a >= 1e-4 && a < TWO50)) return 0;
    for (int k = 0; k < 16; k++) {
        double p = a * POW10[k];
        if (p >= TWO50) return 0;
        double r = (p + 0x1p52) - 0x1p52;
        if (fabs(p - r) > p * 0x1p-50 || r / POW10[k] != a) continue;
        /* the digits of r, with the point k from the right and one digit at least before it */
        char digits[40];
        char *first = put_u64_rev(digits + sizeof digits, (uint64_t)r);
        while (digits + sizeof digits - first <= k) *--first = '0';
        int n = (int)(digits + sizeof digits - first);
        int o = 0;
        if (signbit(d)) out[o++] = '-';
        memcpy(out + o, first, n - k);
        o += n - k;
        out[o++] = '.';
        if (k == 0) {
            out[o++] = '0';
        } else {
            memcpy(out + o, digits + sizeof digits - k, k);
            o += k;
        }
        return o;
    }
    return 0;
}

/* 0 written, -1 error, 2 (nogil) needs the GIL: repr through Python's dtoa. */
static int put_repr(buf_t *b, double d, int nogil) {
    char fast[40];
    int n = short_repr(d, fast);
    if (n) return buf_put(b, fast, n);
    if (nogil) return 2;
    char *s = PyOS_double_to_string(d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!s) return -1;
    int rc = buf_put(b, s, (Py_ssize_t)strlen(s));
    PyMem_Free(s);
    return rc;
}

/* Tag value: plain text only (no backslash, no control character); `,` `=` and space escaped.
 * 1: hand back. */
static int put_tag_value(buf_t *b, const char *s, Py_ssize_t n) {
    if (buf_grow(b, 2 * n) < 0) return -1;
    char *o = b->p + b->len;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == '\\') return 1;
        if (c == ',' || c == '=' || c == ' ') *o++ = '\\';
        *o++ = (char)c;
    }
    b->len = o - b->p;
    return 0;
}

static int put_string_field(buf_t *b, const char *s, Py_ssize_t n) {
    if (buf_grow(b, 2 * n + 2) < 0) return -1;
    char *o = b->p + b->len;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"' || c == '\\') *o++ = '\\';
        *o++ = c;
    }
    *o++ = '"';
    b->len = o - b->p;
    return 0;
}

/* One field value of a declared kind; 0 written, 1 hand back, -1 error, 2 (nogil) needs the GIL. */
static int put_field(Plan *pl, buf_t *b, int kind, const val_t *v, int nogil) {
    switch (kind) {
    case K_FLOAT:
        if (v->type == V_FLOAT) {
            if (!isfinite(v->d)) return 1;
            return put_repr(b, v->d, nogil);
        }
        if (v->type == V_INT) {
            if (v->i > (1LL << 53) || v->i < -(1LL << 53)) return 1;
            return put_repr(b, (double)v->i, nogil);
        }
        if (v->type == V_STR) {  /* number text (JSON's grammar), in every framing, as format_field_value */
            double d;
            if (text_float(v->s, v->n, &d) < 0 || !isfinite(d)) return 1;
            return put_repr(b, d, nogil);
        }
        return 1;
    case K_INTEGER: {
        int64_t i;
        if (v->type == V_INT) i = v->i;
        else if (v->type == V_STR) { if (text_int(v->s, v->n, &i) < 0) return 1; }
        else return 1;
        if (buf_put_int(b, i) < 0 || buf_putc(b, 'i') < 0) return -1;
        return 0;
    }
    case K_STRING:
        if (v->type != V_STR) return 1;
        return put_string_field(b, v->s, v->n) < 0 ? -1 : 0;
    case K_BOOLEAN: {
        /* true/false, the integers 0 and 1, the texts "true", "false", "1", "0" exactly */
        int truth;
        if (v->type == V_BOOL || (v->type == V_INT && (v->i == 0 || v->i == 1))) truth = v->i != 0;
        else if (v->type == V_STR && ((v->n == 4 && memcmp(v->s, "true", 4) == 0) || (v->n == 1 && v->s[0] == '1'))) truth = 1;
        else if (v->type == V_STR && ((v->n == 5 && memcmp(v->s, "false", 5) == 0) || (v->n == 1 && v->s[0] == '0'))) truth = 0;
        else return 1;
        return buf_put(b, truth ? "true" : "false", truth ? 4 : 5) < 0 ? -1 : 0;
    }
    }
    return 1;
}

/* ---- series key -> str -------------------------------------------------------------------- */

/* The hash of the plan's in-memory tables (series, texts, keys): 8 bytes a step, each mixed by
 * a multiply and a shift, then murmur3's finaliser (a series key of 40 bytes: 5 steps where a byte
 * a step took 40 dependent multiplies). */
static uint64_t fnv1a(const char *s, Py_ssize_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t w = 0;
        memcpy(&w, s, (size_t)n);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static void scache_clear(Plan *pl) {
    if (!pl->scache) return;
    for (int i = 0; i < SCACHE_SIZE; i++) Py_CLEAR(pl->scache[i].str);
    pl->scache_used = 0;
}

/* A new reference to the series as str. */
static PyObject *series_str(Plan *pl, const char *s, Py_ssize_t n) {
    if (n > SCACHE_MAX_KEY || !pl->scache) return PyUnicode_DecodeUTF8(s, n, "strict");
    uint64_t h = fnv1a(s, n);
    unsigned i = (unsigned)h & (SCACHE_SIZE - 1);
    for (;;) {
        sentry_t *e = &pl->scache[i];
        if (!e->str) break;
        if (e->hash == h && e->n == n && memcmp(e->key, s, n) == 0) { Py_INCREF(e->str); return e->str; }
        i = (i + 1) & (SCACHE_SIZE - 1);
    }
    PyObject *str = PyUnicode_DecodeUTF8(s, n, "strict");
    if (!str) return NULL;
    if (pl->scache_used >= SCACHE_SIZE / 2) {  /* bounded: start over */
        scache_clear(pl);
        i = (unsigned)h & (SCACHE_SIZE - 1);
    }
    sentry_t *e = &pl->scache[i];
    e->hash = h; e->n = n; memcpy(e->key, s, n);
    Py_INCREF(str);
    e->str = str;
    pl->scache_used++;
    return str;
}

/* ---- text -> tag parts (derived tags, topic tags): the mapper's rule, cached ---------------- */

static void tentry_free(tentry_t *e) {
    PyMem_Free(e->data);
    e->data = NULL;
    e->used = 0;
}

static void tcache_clear(tcache_t *c) {
    if (c->table)
        for (int i = 0; i < TCACHE_SIZE; i++) tentry_free(&c->table[i]);
    c->used = 0;
}

static void tcache_free(tcache_t *c) {
    tcache_clear(c);
    PyMem_Free(c->table);
    c->table = NULL;
    tentry_free(&c->absent);
    tentry_free(&c->scratch);
    Py_CLEAR(c->rule);
}

/* e = rule(text) (absent: rule(None)). 0: filled (e->back: refused); 1: hand back, nothing
 * cached (the rule raised: the Python path will say what); -1: out of memory. */
static int tentry_fill(tcache_t *c, tentry_t *e, const char *s, Py_ssize_t n, int absent) {
    PyObject *arg = absent ? Py_NewRef(Py_None) : PyUnicode_DecodeUTF8(s, n, "strict");
    if (!arg) { PyErr_Clear(); return 1; }
    PyObject *r = PyObject_CallFunctionObjArgs(c->rule, arg, NULL);
    Py_DECREF(arg);
    if (!r) {
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) return -1;
        PyErr_Clear();
        return 1;
    }
    Py_ssize_t total = 0;
    int back = r == Py_None;
    if (!back) {
        if (!PyTuple_Check(r) || PyTuple_Size(r) != c->ngroups) { Py_DECREF(r); return 1; }
        for (int g = 0; g < c->ngroups; g++) {
            PyObject *part = PyTuple_GetItem(r, g);  /* borrowed */
            if (!part || !PyBytes_Check(part)) { PyErr_Clear(); Py_DECREF(r); return 1; }
            total += PyBytes_Size(part);
        }
    }
    Py_ssize_t key_n = absent ? 0 : n;
    char *data = PyMem_Malloc(key_n + total + 1);
    if (!data) { Py_DECREF(r); PyErr_NoMemory(); return -1; }
    if (key_n) memcpy(data, s, key_n);
    Py_ssize_t at = 0;
    e->off[0] = 0;
    for (int g = 0; !back && g < c->ngroups; g++) {
        char *ps; Py_ssize_t pn;
        if (PyBytes_AsStringAndSize(PyTuple_GetItem(r, g), &ps, &pn) < 0) {  /* cannot fail: bytes */
            PyErr_Clear(); PyMem_Free(data); Py_DECREF(r); return 1;
        }
        if (pn) memcpy(data + key_n + at, ps, pn);
        at += pn;
        e->off[g + 1] = at;
    }
    Py_DECREF(r);
    PyMem_Free(e->data);
    e->data = data;
    e->key_n = key_n;
    e->back = back;
    e->used = 1;
    return 0;
}

/* The entry for text s (NULL: an absent value). NULL with *rc 1 (hand back) or -1 (error), or
 * 2 (nogil: the text is not cached, the rule is Python: needs the GIL). */
static tentry_t *tcache_get(tcache_t *c, const char *s, Py_ssize_t n, int *rc, int nogil) {
    tentry_t *e;
    if (!s) {
        e = &c->absent;
        if (!e->used && nogil) { *rc = 2; return NULL; }
        if (!e->used && (*rc = tentry_fill(c, e, NULL, 0, 1)) != 0) return NULL;
        return e;
    }
    if (n > TCACHE_MAX_KEY || !c->table) {
        if (nogil) { *rc = 2; return NULL; }
        if ((*rc = tentry_fill(c, &c->scratch, s, n, 0)) != 0) return NULL;
        return &c->scratch;
    }
    uint64_t h = fnv1a(s, n);
    unsigned i = (unsigned)h & (TCACHE_SIZE - 1);
    for (;;) {
        e = &c->table[i];
        if (!e->used) break;
        if (e->hash == h && e->key_n == n && memcmp(e->data, s, n) == 0) return e;
        i = (i + 1) & (TCACHE_SIZE - 1);
    }
    if (nogil) { *rc = 2; return NULL; }
    if (c->used >= TCACHE_SIZE / 2) {  /* bounded: start over */
        tcache_clear(c);
        e = &c->table[(unsigned)h & (TCACHE_SIZE - 1)];
    }
    if ((*rc = tentry_fill(c, e, s, n, 0)) != 0) return NULL;
    e->hash = h;
    c->used++;
    return e;
}

static inline const char *tentry_part(const tentry_t *e, int g, Py_ssize_t *n) {
    *n = e->off[g + 1] - e->off[g];
    return e->data + e->key_n + e->off[g];
}

/* The text Python's _tag_text gives a scalar (strings as they are, integers in decimal, booleans
 * true/false, finite floats as repr): 0, *s and *n set (tmp: at least 48 bytes); 1: hand back
 * (NaN, infinities, binary, anything else: the Python path refuses or decides); 2 (nogil): a
 * float repr needs the GIL. */
static int tag_text(const val_t *v, char *tmp, const char **s, Py_ssize_t *n, int nogil) {
    switch (v->type) {
    case V_STR: *s = v->s; *n = v->n; return 0;
    case V_BOOL: *s = v->i ? "true" : "false"; *n = v->i ? 4 : 5; return 0;
    case V_INT: {
        buf_t b = {tmp, 0, 48, 1};
        buf_put_int(&b, v->i);  /* at most 20 characters: never grows */
        *s = tmp; *n = b.len;
        return 0;
    }
    case V_FLOAT: {
        if (!isfinite(v->d)) return 1;
        int k = short_repr(v->d, tmp);
        if (!k) {
            if (nogil) return 2;  /* Python's dtoa needs the GIL */
            char *r = PyOS_double_to_string(v->d, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
            if (!r) { PyErr_Clear(); return 1; }
            size_t len = strlen(r);
            if (len > 47) { PyMem_Free(r); return 1; }
            memcpy(tmp, r, len);
            PyMem_Free(r);
            k = (int)len;
        }
        *s = tmp; *n = k;
        return 0;
    }
    }
    return 1;
}

/* ---- uniqueness: the Python mapper's own state, same rule as its compiled path ------------- */

/* 0: *ts claimed; 1: hand the message back (nothing changed); -1: an exception, which the
 * mapper's `claim` raised for this point (the message is refused with it) or a failure. */
/* times.append(v) and the trim, as the window's claim does them: 0, 1 (not appended: hand back), -1. */
static int window_append(Plan *pl, PyObject *times, Py_ssize_t len, int64_t v) {
    PyObject *value = PyLong_FromLongLong(v);
    if (!value) return -1;
    PyObject *r = PyObject_CallMethodObjArgs(times, str_append, value, NULL);
    Py_DECREF(value);
    if (!r) { PyErr_Clear(); return 1; }
    Py_DECREF(r);
    if (len + 1 > pl->trim && PySequence_DelSlice(times, 0, len + 1 - pl->window) < 0) return -1;
    return 0;
}

/* An entry's pending times into its array: the array then holds what appending each and trimming
 * as claim_time did would have left (a trim only ever drops the oldest times: the last `len` of
 * the array's times and the pending ones). */
static int upend_apply(Plan *pl, upend_t *e) {
    Py_ssize_t have = PyObject_Size(e->times);
    if (have < 0) return -1;
    if (have != e->len0) {  /* changed meanwhile (nothing that claims ran: never): one by one */
        for (Py_ssize_t i = 0; i < e->nadd; i++) {
            Py_ssize_t n = PyObject_Size(e->times);
            if (n < 0 || window_append(pl, e->times, n, e->add[i]) < 0) return -1;
        }
        return 0;
    }
    Py_ssize_t keep = e->len, from = keep <= e->nadd ? e->nadd - keep : 0;
    if (keep <= e->nadd && PySequence_DelSlice(e->times, 0, have) < 0) return -1;
    PyObject *raw = PyBytes_FromStringAndSize((const char *)(e->add + from), (e->nadd - from) * 8);
    if (!raw) return -1;
    PyObject *r = PyObject_CallMethodObjArgs(e->times, str_frombytes, raw, NULL);
    Py_DECREF(raw);
    if (!r) return -1;
    Py_DECREF(r);
    if (keep > e->nadd && have + e->nadd > keep && PySequence_DelSlice(e->times, 0, have + e->nadd - keep) < 0)
        return -1;
    return 0;
}

/* Every pending time into the window (see upend_t); the entries released. 0, or -1 with the
 * first error (the others' times are still applied). */
static int uniq_settle(Plan *pl) {
    int rc = 0;
    for (int i = 0; i < pl->upend_used; i++) {
        upend_t *e = &pl->upend[i];
        if (rc == 0 && e->nadd && upend_apply(pl, e) < 0) rc = -1;
        e->nadd = 0;
        Py_CLEAR(e->series);
        Py_CLEAR(e->times);
        if (e->cap > 4096) { PyMem_Free(e->add); e->add = NULL; e->cap = 0; }
    }
    if (pl->upend_used) memset(pl->upend_index, 0, sizeof pl->upend_index);
    pl->upend_used = 0;
    return rc;
}

/* uniq_settle at the end of a call that may have claimed, keeping the call's own exception
 * (if it raised) or raising the settle's (a new reference to r, or NULL). */
static PyObject *uniq_settled(Plan *pl, PyObject *r) {
    if (!pl->upend_used) return r;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (uniq_settle(pl) < 0) {
        if (!type) { Py_XDECREF(r); return NULL; }
        PyErr_Clear();
    }
    PyErr_Restore(type, value, tb);
    return r;
}

/* The pending entry of `series`, found or made (*out; NULL when the series has no window array
 * yet: the general rule). 0, 1: hand the message back (the window could not be read), -1. */
static int upend_find(Plan *pl, PyObject *series, upend_t **out) {
    *out = NULL;
    if (!pl->upend && !(pl->upend = PyMem_Calloc(UPEND_MAX, sizeof(upend_t)))) { PyErr_NoMemory(); return -1; }
    unsigned h = (unsigned)(((uint64_t)(uintptr_t)series * 0x9E3779B97F4A7C15ULL) >> 55) & (UPEND_SLOTS - 1);
    for (uint16_t k; (k = pl->upend_index[h]) != 0; h = (h + 1) & (UPEND_SLOTS - 1))
        if (pl->upend[k - 1].series == series) { *out = &pl->upend[k - 1]; return 0; }
    PyObject *times = PyDict_GetItemWithError(pl->uniq_state, series);  /* borrowed */
    if (!times && PyErr_Occurred()) { PyErr_Clear(); return 1; }
    if (!times) return 0;
    int full = pl->upend_used == UPEND_MAX;
    for (int i = 0; i < pl->upend_used && !full; i++)
        full = pl->upend[i].times == times;  /* the same series under another str: start over */
    if (full) {
        Py_INCREF(times);
        int rc = uniq_settle(pl);
        Py_DECREF(times);  /* still the dict's */
        if (rc < 0) return -1;
        h = (unsigned)(((uint64_t)(uintptr_t)series * 0x9E3779B97F4A7C15ULL) >> 55) & (UPEND_SLOTS - 1);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(times, &view, PyBUF_SIMPLE) < 0) { PyErr_Clear(); return 1; }
    Py_ssize_t len = view.len / 8;
    int64_t last = len ? ((int64_t *)view.buf)[len - 1] : 0;
    PyBuffer_Release(&view);
    upend_t *e = &pl->upend[pl->upend_used];
    e->series = Py_NewRef(series);
    e->times = Py_NewRef(times);
    e->len0 = e->len = len;
    e->last = last;
    e->nadd = 0;
    pl->upend_index[h] = (uint16_t)(++pl->upend_used);
    *out = e;
    return 0;
}

static int claim_time(Plan *pl, PyObject *series, int64_t *ts) {
    if (pl->uniq_mode == U_WINDOW) {
        /* the common case: times[-1] < ts <= TMAX, appended (pending, upend_t) */
        upend_t *e;
        int found = upend_find(pl, series, &e);
        if (found != 0) return found;
        if (e && e->len && e->last < *ts && *ts <= pl->tmax) {
            if (e->nadd == e->cap) {
                Py_ssize_t cap = e->cap ? 2 * e->cap : 64;
                int64_t *p = PyMem_Realloc(e->add, cap * sizeof(int64_t));
                if (!p) { PyErr_NoMemory(); return -1; }
                e->add = p;
                e->cap = cap;
            }
            e->add[e->nadd++] = *ts;
            e->last = *ts;
            if (++e->len > pl->trim) e->len = pl->window;
            return 0;
        }
        /* anything else: Python's rule, on the window with every pending time in */
        if (uniq_settle(pl) < 0) return -1;
        /* times = CUR.get(series); if times is not None and times[-1] < ts <= TMAX: append */
        PyObject *times = PyDict_GetItemWithError(pl->uniq_state, series);  /* borrowed */
        if (!times && PyErr_Occurred()) { PyErr_Clear(); return 1; }
        if (times) {
            Py_buffer view;
            if (PyObject_GetBuffer(times, &view, PyBUF_SIMPLE) < 0) { PyErr_Clear(); return 1; }
            Py_ssize_t len = view.len / 8;
            int64_t last = len ? ((int64_t *)view.buf)[len - 1] : 0;
            PyBuffer_Release(&view);
            if (len && last < *ts && *ts <= pl->tmax) return window_append(pl, times, len, *ts);
        }
        PyObject *value = PyLong_FromLongLong(*ts);
        if (!value) return -1;
        PyObject *r = PyObject_CallFunctionObjArgs(pl->uniq_claim, series, value, NULL);
        Py_DECREF(value);
        if (!r) return -1;
        long long got = PyLong_AsLongLong(r);
        Py_DECREF(r);
        if (got == -1 && PyErr_Occurred()) return -1;
        *ts = got;
        return 0;
    }
    /* U_LAST: last = LAST.get(series); if last is not None and ts == last[0]: ts = last[1] + 1;
     * LAST[series] = (last[0] or ts, ts) */
    PyObject *last = PyDict_GetItemWithError(pl->uniq_state, series);
    if (!last && PyErr_Occurred()) { PyErr_Clear(); return 1; }
    int64_t first = *ts;
    if (last) {
        PyObject *l0 = PyTuple_GetItem(last, 0), *l1 = l0 ? PyTuple_GetItem(last, 1) : NULL;
        if (!l0 || !l1) { PyErr_Clear(); return 1; }
        int over = 0;
        long long t0 = PyLong_AsLongLongAndOverflow(l0, &over);
        if (t0 == -1 && PyErr_Occurred()) { PyErr_Clear(); return 1; }
        if (!over && t0 == *ts) {  /* a value beyond int64 never equals this time */
            long long t1 = PyLong_AsLongLongAndOverflow(l1, &over);
            if ((t1 == -1 && PyErr_Occurred()) || over || t1 == INT64_MAX) { PyErr_Clear(); return 1; }
            *ts = t1 + 1;
        }
    }
    PyObject *pair = Py_BuildValue("(LL)", (long long)first, (long long)*ts);
    if (!pair) return -1;
    int rc = PyDict_SetItem(pl->uniq_state, series, pair);
    Py_DECREF(pair);
    return rc;
}

/* ---- newest point per series (cache) ------------------------------------------------------- */

static int newest_note(Plan *pl, PyObject *series, int64_t ts, const char *payload, Py_ssize_t n) {
    int i;
    for (i = 0; i < pl->newest_used; i++)
        if (pl->newest[i].series == series) break;
    if (i == pl->newest_used) {
        if (i == pl->newest_cap) {
            int cap = pl->newest_cap ? pl->newest_cap * 2 : 16;
            newest_t *p = PyMem_Realloc(pl->newest, sizeof(newest_t) * cap);
            if (!p) { PyErr_NoMemory(); return -1; }
            memset(p + pl->newest_cap, 0, sizeof(newest_t) * (cap - pl->newest_cap));
            pl->newest = p; pl->newest_cap = cap;
        }
        pl->newest_used++;
        Py_INCREF(series);
        pl->newest[i].series = series;
        pl->newest[i].used = 0;
    } else if (ts < pl->newest[i].ts) {
        return 0;  /* `>=`: a later point of equal time wins, an older one does not */
    }
    newest_t *e = &pl->newest[i];
    if (e->cap < n) {
        char *p = PyMem_Realloc(e->payload, n);
        if (!p) { PyErr_NoMemory(); return -1; }
        e->payload = p; e->cap = n;
    }
    if (n) memcpy(e->payload, payload, n);  /* an empty payload: payload may be NULL */
    e->n = n; e->ts = ts; e->used = 1;
    return 0;
}

static int parse_record(Plan *pl, const char *payload, Py_ssize_t n, val_t *vals);
static int row_values(Plan *pl, const char *p, Py_ssize_t n, val_t *vals);

static PyObject *value_object(const val_t *v) {
    switch (v->type) {
    case V_BOOL: return PyBool_FromLong((long)v->i);
    case V_INT: return PyLong_FromLongLong(v->i);
    case V_FLOAT: return PyFloat_FromDouble(v->d);
    case V_STR: return PyUnicode_DecodeUTF8(v->s, v->n, "strict");
    }
    Py_RETURN_NONE;
}

/* newest[series] = (ts, {declared field: value}) where ts >= what newest holds. */
static int newest_flush(Plan *pl, PyObject *newest) {
    int rc = 0;
    val_t vals[MAX_SLOTS];
    for (int i = 0; i < pl->newest_used; i++) {
        newest_t *e = &pl->newest[i];
        if (rc == 0 && e->used) {
            PyObject *current = PyDict_GetItemWithError(newest, e->series);
            if (!current && PyErr_Occurred()) { rc = -1; goto next; }
            if (current) {
                PyObject *t = PyTuple_GetItem(current, 0);
                int over = 0;
                long long have = t ? PyLong_AsLongLongAndOverflow(t, &over) : -1;
                if (PyErr_Occurred()) { rc = -1; goto next; }
                if (over > 0 || (!over && e->ts < have)) goto next;  /* beyond int64: newer */
            }
            if ((pl->each ? row_values(pl, e->payload, e->n, vals)
                          : parse_record(pl, e->payload, e->n, vals)) != 0) goto next;  /* cannot happen */
            PyObject *record = PyDict_New();
            if (!record) { rc = -1; goto next; }
            for (int f = 0; f < pl->nfields && rc == 0; f++) {
                const val_t *v = &vals[pl->fields[f].slot];
                if (v->type == V_ABSENT || v->type == V_NIL) continue;
                PyObject *o = value_object(v);
                if (!o || PyDict_SetItem(record, pl->fields[f].name, o) < 0) rc = -1;
                Py_XDECREF(o);
            }
            if (rc == 0) {
                PyObject *pair = Py_BuildValue("(LN)", (long long)e->ts, record);
                record = NULL;
                if (!pair || PyDict_SetItem(newest, e->series, pair) < 0) rc = -1;
                Py_XDECREF(pair);
            }
            Py_XDECREF(record);
        }
    next:
        Py_CLEAR(e->series);
        e->used = 0;
        if (e->cap > NEWEST_KEEP) {  /* no capacity kept between calls beyond a tick's */
            PyMem_Free(e->payload);
            e->payload = NULL;
            e->cap = 0;
        }
    }
    pl->newest_used = 0;
    return rc;
}

/* ---- one message -------------------------------------------------------------------------- */

/* ---- JSON: a flat object, as json.loads reads it; anything else is handed back -------------- */

static inline const char *json_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* A string without escapes and control characters (valid UTF-8 checked by the caller). */
static const char *json_string(const char *p, const char *end, val_t *v) {
    if (p >= end || *p != '"') return NULL;
    const char *start = ++p;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') { v->type = V_STR; v->s = start; v->n = p - start; return p + 1; }
        if (c == '\\' || c < 0x20) return NULL;  /* escapes and control characters: Python decides */
        p++;
    }
    return NULL;
}

/* A scalar: string, number (JSON's grammar, ASCII), true, false, null. NULL: hand back. */
static const char *json_value(const char *p, const char *end, val_t *v) {
    if (p >= end) return NULL;
    char c = *p;
    if (c == '"') return json_string(p, end, v);
    if (c == 't' && end - p >= 4 && memcmp(p, "true", 4) == 0) { v->type = V_BOOL; v->i = 1; return p + 4; }
    if (c == 'f' && end - p >= 5 && memcmp(p, "false", 5) == 0) { v->type = V_BOOL; v->i = 0; return p + 5; }
    if (c == 'n' && end - p >= 4 && memcmp(p, "null", 4) == 0) { v->type = V_NIL; return p + 4; }
    if (c != '-' && (c < '0' || c > '9')) return NULL;  /* nested values, NaN, Infinity */
    const char *start = p;
    if (*p == '-') p++;
    if (p >= end) return NULL;
    const char *digits = p;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < end && *p >= '0' && *p <= '9') p++; }
    else return NULL;
    /* An integer literal of 19+ digits, used or ignored (json.loads refuses 4,301+ digits):
     * Python decides. */
    if (p - digits > INT_DIGITS_MAX) return NULL;
    int is_float = 0;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return NULL;
        while (p < end && *p >= '0' && *p <= '9') p++;
        is_float = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return NULL;
        while (p < end && *p >= '0' && *p <= '9') p++;
        is_float = 1;
    }
    if (is_float) {
        double d;
        if (text_float(start, p - start, &d) < 0) return NULL;
        v->type = V_FLOAT; v->d = d;
    } else {
        int64_t i;
        if (text_int(start, p - start, &i) < 0) return NULL;  /* cannot happen: at most 18 digits */
        v->type = V_INT; v->i = i;
    }
    return p;
}

static int json_record(Plan *pl, const char *p, Py_ssize_t n, val_t *vals) {
    const char *end = p + n;
    /* json.loads(bytes) guesses UTF-16/32 from NUL bytes and honours BOMs: plain UTF-8 only here */
    if (n < 2 || !p[0] || !p[1] || (unsigned char)p[0] >= 0xEF) return 1;
    if (!utf8_valid((const unsigned char *)p, n)) return 1;
    for (int s = 0; s < pl->nslots; s++) vals[s].type = V_ABSENT;
    p = json_ws(p, end);
    if (p >= end || *p != '{') return 1;
    p = json_ws(p + 1, end);
    if (p < end && *p == '}') return json_ws(p + 1, end) == end ? 0 : 1;
    val_t key, tmp;
    for (uint32_t at = 0;; at++) {
        p = json_string(p, end, &key);
        if (!p) return 1;
        p = json_ws(p, end);
        if (p >= end || *p != ':') return 1;
        p = json_ws(p + 1, end);
        int s = find_slot_at(pl, key.s, key.n, at);
        if (s >= 0 && vals[s].type != V_ABSENT) return 1;  /* a duplicate key: the Python path decides */
        p = json_value(p, end, s >= 0 ? &vals[s] : &tmp);
        if (!p) return 1;
        p = json_ws(p, end);
        if (p >= end) return 1;
        if (*p == ',') { p = json_ws(p + 1, end); continue; }
        if (*p == '}') return json_ws(p + 1, end) == end ? 0 : 1;
        return 1;
    }
}

static int delimited_record(Plan *pl, const char *p, Py_ssize_t n, val_t *vals) {
    if (!utf8_valid((const unsigned char *)p, n)) return 1;
    for (int s = 0; s < pl->nslots; s++) vals[s].type = V_ABSENT;
    Py_ssize_t start = 0;
    int k = 0;
    for (;;) {
        const char *hit = NULL;
        if (pl->delim_n == 1) hit = memchr(p + start, pl->delim[0], n - start);
        else {
            for (Py_ssize_t j = start; j + pl->delim_n <= n; j++)
                if (memcmp(p + j, pl->delim, pl->delim_n) == 0) { hit = p + j; break; }
        }
        Py_ssize_t stop = hit ? hit - p : n;
        if (k >= pl->norder) return 1;
        int s = pl->order_slot[k++];
        if (s >= 0) { vals[s].type = V_STR; vals[s].s = p + start; vals[s].n = stop - start; }
        if (!hit) break;
        start = stop + pl->delim_n;
    }
    return k == pl->norder ? 0 : 1;
}

/* ---- nested records (paths): msgpack and JSON walked along the path trie ------------------- */

static int child_by_key(Plan *pl, const node_t *nd, const char *k, Py_ssize_t n) {
    for (int c = nd->child; c >= 0; c = pl->nodes[c].next) {
        const node_t *ch = &pl->nodes[c];
        if (!ch->by_index && ch->key_n == n && (n == 0 || memcmp(ch->key, k, n) == 0)) return c;
    }
    return -1;
}

static inline int mp_container(unsigned char c, const unsigned char *p, const unsigned char *end, int *is_map,
                               uint32_t *count, Py_ssize_t *hdr) {
    Py_ssize_t avail = end - p;
    if (c >= 0x80 && c <= 0x8f) { *is_map = 1; *count = c & 0x0f; *hdr = 1; return 1; }
    if (c >= 0x90 && c <= 0x9f) { *is_map = 0; *count = c & 0x0f; *hdr = 1; return 1; }
    if (c == 0xde || c == 0xdc) {
        if (avail < 3) return -1;
        *is_map = c == 0xde; *count = be16(p + 1); *hdr = 3; return 1;
    }
    if (c == 0xdf || c == 0xdd) {
        if (avail < 5) return -1;
        *is_map = c == 0xdf; *count = be32(p + 1); *hdr = 5; return 1;
    }
    return 0;
}

/* One value of any kind, as Python's unpackb reads it, unused: bytes, or -1 (hand back: map keys
 * other than strings, ext types, more than MAX_DEPTH levels, anything mp_value hands back). */
static Py_ssize_t mp_skip(const unsigned char *p, const unsigned char *end, int depth) {
    if (p >= end) return -1;
    int is_map; uint32_t count; Py_ssize_t hdr;
    int kind = mp_container(p[0], p, end, &is_map, &count, &hdr);
    if (kind < 0) return -1;
    if (!kind) { val_t tmp; return mp_value(p, end, &tmp); }
    if (depth >= MAX_DEPTH) return -1;
    const unsigned char *q = p + hdr;
    for (uint32_t e = 0; e < count; e++) {
        if (is_map) {
            val_t key;
            Py_ssize_t u = q < end ? mp_value(q, end, &key) : -1;
            if (u < 0 || key.type != V_STR) return -1;
            q += u;
        }
        Py_ssize_t u = mp_skip(q, end, depth + 1);
        if (u < 0) return -1;
        q += u;
    }
    return q - p;
}

/* The value at p for trie node ni (paths.resolve, step by step): fills the slots below it;
 * bytes used, or -1 (hand back: a container of the wrong kind, a scalar where one is expected,
 * a container where a value is, a key met twice). null: everything below is absent. */
static Py_ssize_t mp_node(Plan *pl, int ni, const unsigned char *p, const unsigned char *end, val_t *vals,
                          int depth) {
    const node_t *nd = &pl->nodes[ni];
    if (p >= end) return -1;
    int is_map; uint32_t count; Py_ssize_t hdr;
    int kind = mp_container(p[0], p, end, &is_map, &count, &hdr);
    if (kind < 0) return -1;
    if (!kind) {
        val_t v;
        Py_ssize_t u = mp_value(p, end, &v);
        if (u < 0) return -1;
        if (v.type != V_NIL && nd->child >= 0) return -1;  /* wrong_type */
        if (nd->slot >= 0) vals[nd->slot] = v;
        return u;
    }
    if (nd->slot >= 0 || (is_map && nd->indexes) || (!is_map && nd->keys) || depth >= MAX_DEPTH) return -1;
    const unsigned char *q = p + hdr;
    for (uint32_t e = 0; e < count; e++) {
        Py_ssize_t u = -1;
        if (is_map) {
            val_t key;
            Py_ssize_t k = q < end ? mp_value(q, end, &key) : -1;
            if (k < 0 || key.type != V_STR) return -1;
            q += k;
            int c = child_by_key(pl, nd, key.s, key.n);
            if (c >= 0) {
                if (pl->seen[c] == pl->gen) return -1;  /* a key twice: the Python path decides */
                pl->seen[c] = pl->gen;
                u = mp_node(pl, c, q, end, vals, depth + 1);
            } else {
                u = mp_skip(q, end, depth + 1);
            }
        } else {
            int hit = 0;
            for (int c = nd->child; c >= 0; c = pl->nodes[c].next) {
                const node_t *ch = &pl->nodes[c];
                if (ch->index == (int64_t)e || ch->index + (int64_t)count == (int64_t)e) {
                    Py_ssize_t got = mp_node(pl, c, q, end, vals, depth + 1);
                    if (got < 0) return -1;
                    u = got;
                    hit = 1;
                }
            }
            if (!hit) u = mp_skip(q, end, depth + 1);
        }
        if (u < 0) return -1;
        q += u;
    }
    return q - p;
}

static void nested_start(Plan *pl, val_t *vals) {
    for (int s = 0; s < pl->nslots; s++) vals[s].type = V_ABSENT;
    if (++pl->gen == 0) { memset(pl->seen, 0, sizeof(pl->seen)); pl->gen = 1; }
}

static int mp_record_nested(Plan *pl, const unsigned char *p, Py_ssize_t n, val_t *vals) {
    if (n < 1) return 1;
    unsigned char c = p[0];
    if (!((c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf)) return 1;  /* not a map */
    nested_start(pl, vals);
    Py_ssize_t u = mp_node(pl, 0, p, p + n, vals, 0);
    return u == n ? 0 : 1;
}

static const char *json_string(const char *p, const char *end, val_t *v);
static const char *json_value(const char *p, const char *end, val_t *v);
static inline const char *json_ws(const char *p, const char *end);

/* As mp_node, for JSON text (valid UTF-8 checked by the caller); NULL: hand back. skip: no node
 * (a value the mapping does not read). Indexes are never negative here (fastpath.py). */
static const char *json_node(Plan *pl, int ni, const char *p, const char *end, val_t *vals, int depth) {
    const node_t *nd = ni >= 0 ? &pl->nodes[ni] : NULL;
    if (p >= end) return NULL;
    if (*p == '{' || *p == '[') {
        int is_map = *p == '{';
        char close = is_map ? '}' : ']';
        if (depth >= MAX_DEPTH) return NULL;
        if (nd && (nd->slot >= 0 || (is_map && nd->indexes) || (!is_map && nd->keys))) return NULL;
        p = json_ws(p + 1, end);
        if (p < end && *p == close) return p + 1;
        for (int64_t e = 0;; e++) {
            int c = -1;
            if (is_map) {
                val_t key;
                p = json_string(p, end, &key);
                if (!p) return NULL;
                p = json_ws(p, end);
                if (p >= end || *p != ':') return NULL;
                p = json_ws(p + 1, end);
                if (nd && (c = child_by_key(pl, nd, key.s, key.n)) >= 0) {
                    if (pl->seen[c] == pl->gen) return NULL;
                    pl->seen[c] = pl->gen;
                }
            } else if (nd) {
                for (int k = nd->child; k >= 0; k = pl->nodes[k].next)
                    if (pl->nodes[k].index == e) { c = k; break; }
            }
            p = json_node(pl, c, p, end, vals, depth + 1);
            if (!p) return NULL;
            p = json_ws(p, end);
            if (p >= end) return NULL;
            if (*p == ',') { p = json_ws(p + 1, end); continue; }
            if (*p == close) return p + 1;
            return NULL;
        }
    }
    val_t v;
    const char *q = json_value(p, end, &v);
    if (!q) return NULL;
    if (nd) {
        if (v.type != V_NIL && nd->child >= 0) return NULL;
        if (nd->slot >= 0) vals[nd->slot] = v;
    }
    return q;
}

static int json_record_nested(Plan *pl, const char *p, Py_ssize_t n, val_t *vals) {
    const char *end = p + n;
    if (n < 2 || !p[0] || !p[1] || (unsigned char)p[0] >= 0xEF) return 1;
    if (!utf8_valid((const unsigned char *)p, n)) return 1;
    p = json_ws(p, end);
    if (p >= end || *p != '{') return 1;
    nested_start(pl, vals);
    p = json_node(pl, 0, p, end, vals, 0);
    return p && json_ws(p, end) == end ? 0 : 1;
}

static int parse_record(Plan *pl, const char *payload, Py_ssize_t n, val_t *vals) {
    if (pl->nested) {
        if (pl->framing == F_MSGPACK) return mp_record_nested(pl, (const unsigned char *)payload, n, vals);
        if (pl->framing == F_JSON || pl->framing == F_TEXT_JSON) return json_record_nested(pl, payload, n, vals);
        return 1;
    }
    if (pl->framing == F_MSGPACK) return mp_record(pl, (const unsigned char *)payload, n, vals);
    if (pl->framing == F_JSON || pl->framing == F_TEXT_JSON) return json_record(pl, payload, n, vals);
    return delimited_record(pl, payload, n, vals);
}

static int topic_ok(Plan *pl, const char *t, Py_ssize_t n) {
    if (n == pl->last_topic_n && pl->last_topic && (n == 0 || memcmp(t, pl->last_topic, n) == 0)) return 1;
    if (!utf8_valid((const unsigned char *)t, n)) return 0;
    if (n <= 256) {
        if (pl->last_topic_cap < n) {
            char *p = realloc(pl->last_topic, n ? n : 1);
            if (!p) return 1;  /* valid anyway; just not remembered */
            pl->last_topic = p; pl->last_topic_cap = n;
        }
        if (n) memcpy(pl->last_topic, t, n);  /* never memcpy(NULL, ..., 0): an empty first topic */
        pl->last_topic_n = n;
    }
    return 1;
}

/* The line of one message up to its time (series, then fields) appended to b: the part that
 * needs no Python object, so that it runs without the GIL (nogil: the stage phase, below).
 * 0: written, *series_n and either *ts or *clock (draw the receive clock) set; 1: hand back;
 * 2 (nogil only): needs the GIL (a text the tag caches do not hold, a float repr or a date string
 * only Python reads, no memory): nothing changed, the message is mapped again with the GIL;
 * -1 (with the GIL only): an exception. b is rolled back unless 0. */
static int format_vals(Plan *pl, buf_t *b, int nogil, const val_t *vals, const tentry_t *topic_parts,
                       Py_ssize_t *series_n_out, int64_t *ts_out, int *clock_out);
static int format_each(Plan *pl, buf_t *b, int nogil, const char *payload, Py_ssize_t n, val_t *vals,
                       const tentry_t *topic_parts, Py_ssize_t *rows_out);

static int format_line(Plan *pl, buf_t *b, int nogil, const char *topic, Py_ssize_t topic_n, const char *payload,
                       Py_ssize_t n, Py_ssize_t *series_n_out, int64_t *ts_out, int *clock_out, Py_ssize_t *rows_out) {
    val_t vals[MAX_SLOTS];
    if (n > pl->max_frame || topic_n > pl->max_frame) return 1;
    if (!topic_ok(pl, topic, topic_n)) return 1;
    int rc;
    const tentry_t *topic_parts = NULL;
    if (pl->topic) {  /* the topic's tags, as Mapper._rows takes them (before the record) */
        rc = 0;
        topic_parts = tcache_get(pl->topic, topic, topic_n, &rc, nogil);
        if (!topic_parts) return rc;
        if (topic_parts->back) return 1;
    }
    if (parse_record(pl, payload, n, vals)) return 1;
    *rows_out = 1;
    if (pl->each) return format_each(pl, b, nogil, payload, n, vals, topic_parts, rows_out);
    return format_vals(pl, b, nogil, vals, topic_parts, series_n_out, ts_out, clock_out);
}

/* One point's line up to its time from its values (format_line's rule and return codes). */
static int format_vals(Plan *pl, buf_t *b, int nogil, const val_t *vals, const tentry_t *topic_parts,
                       Py_ssize_t *series_n_out, int64_t *ts_out, int *clock_out) {
    int rc;
    const tentry_t *derived[MAX_DERIVED];
    char tmp[48];
    for (int d = 0; d < pl->nderived; d++) {  /* each derived source's tags, by its text */
        const val_t *v = &vals[pl->derived_slot[d]];
        const char *text = NULL;
        Py_ssize_t text_n = 0;
        if (v->type != V_ABSENT && v->type != V_NIL && (rc = tag_text(v, tmp, &text, &text_n, nogil)) != 0) return rc;
        rc = 0;
        derived[d] = tcache_get(&pl->derived[d], text, text_n, &rc, nogil);
        if (!derived[d]) return rc;
        if (derived[d]->back) return 1;
    }
    Py_ssize_t start = b->len;
    /* series */
    if (buf_put(b, pl->measurement, pl->measurement_n) < 0) goto fail;
    for (int t = 0; t < pl->ntags; t++) {
        tag_t *tag = &pl->tags[t];
        const char *part;
        Py_ssize_t part_n;
        switch (tag->kind) {
        case T_STATIC:
            if (buf_put(b, tag->part, tag->part_n) < 0) goto fail;
            continue;
        case T_DERIVED:
            part = tentry_part(derived[tag->src], tag->group, &part_n);
            if (buf_put(b, part, part_n) < 0) goto fail;
            continue;
        case T_TOPIC:
            part = tentry_part(topic_parts, tag->group, &part_n);
            if (buf_put(b, part, part_n) < 0) goto fail;
            continue;
        }
        const val_t *v = &vals[tag->slot];
        const char *text = NULL;
        Py_ssize_t text_n = 0;
        if (v->type != V_ABSENT && v->type != V_NIL && (rc = tag_text(v, tmp, &text, &text_n, nogil)) != 0) {
            if (rc == 2) goto gil;
            goto back;
        }
        if (text_n == 0) {  /* absent or empty: the default, or left out when optional */
            if (tag->dflt) {
                if (buf_put(b, tag->dflt, tag->dflt_n) < 0) goto fail;
                continue;
            }
            if (tag->optional) continue;
            goto back;  /* required: Python refuses it (missing_field) */
        }
        if (buf_put(b, tag->part, tag->part_n) < 0) goto fail;
        rc = put_tag_value(b, text, text_n);
        if (rc < 0) goto fail;
        if (rc > 0) goto back;
    }
    Py_ssize_t series_n = b->len - start;
    if (series_n > pl->key_check) goto back;
    /* fields */
    Py_ssize_t fields_at = b->len;
    for (int f = 0; f < pl->nfields; f++) {
        field_t *fd = &pl->fields[f];
        const val_t *v = &vals[fd->slot];
        if (v->type == V_ABSENT || v->type == V_NIL) continue;
        if (buf_put(b, fd->prefix, fd->prefix_n) < 0) goto fail;
        rc = put_field(pl, b, fd->kind, v, nogil);
        if (rc < 0) goto fail;
        if (rc == 2) goto gil;
        if (rc > 0) goto back;
    }
    if (b->len == fields_at) goto back;  /* no field: missing_field */
    b->p[fields_at] = ' ';               /* the first field's leading comma */
    /* time */
    *clock_out = 0;
    if (pl->time_slot >= 0) {
        rc = point_time(pl, &vals[pl->time_slot], ts_out, nogil);
        if (rc == 2) goto gil;
        if (rc < 0) goto back;
    } else {  /* the receive time: the mapper's own clock, drawn by finish_line */
        if (!pl->clock) goto back;
        *clock_out = 1;
    }
    *series_n_out = series_n;
    return 0;
back:
    b->len = start;
    return 1;
gil:
    b->len = start;
    return 2;
fail:
    b->len = start;
    return nogil ? 2 : -1;  /* without the GIL: mapped again with it, where it raises */
}

/* ---- each: one point per element the each path reaches -------------------------------------- */

static int elist_reserve(elist_t *l, Py_ssize_t n) {
    if (n <= l->cap) return 0;
    entry_t *e = realloc(l->e, sizeof(entry_t) * n);  /* libc: runs without the GIL */
    if (!e) return -1;
    l->e = e; l->cap = n;
    return 0;
}

/* The entries of the msgpack container at p (< end), values at depth + 1: 0, *is_map set; 1: hand
 * back (not a container, truncated, a key that is not a string, too many entries, no memory). */
static int mp_entries(elist_t *l, const unsigned char *p, const unsigned char *end, int depth, int *is_map) {
    uint32_t count; Py_ssize_t hdr;
    if (p >= end) return 1;
    int kind = mp_container(p[0], p, end, is_map, &count, &hdr);
    if (kind <= 0 || depth >= MAX_DEPTH) return 1;
    if ((Py_ssize_t)count > end - p || count > EACH_ENTRIES_MAX) return 1;  /* every entry takes a byte */
    if (elist_reserve(l, count ? count : 1) < 0) return 1;
    const unsigned char *q = p + hdr;
    l->n = 0;
    for (uint32_t e = 0; e < count; e++) {
        entry_t *en = &l->e[l->n++];
        en->k = NULL; en->kn = 0;
        if (*is_map) {
            val_t key;
            Py_ssize_t u = q < end ? mp_value(q, end, &key) : -1;
            if (u < 0 || key.type != V_STR) return 1;
            en->k = key.s; en->kn = key.n;
            q += u;
        }
        Py_ssize_t u = mp_skip(q, end, depth + 1);
        if (u < 0) return 1;
        en->v = (const char *)q; en->vend = (const char *)q + u;
        q += u;
    }
    return 0;
}

/* As mp_entries, for a JSON object or array at p (valid UTF-8 checked by the caller). */
static int json_entries(Plan *pl, elist_t *l, const char *p, const char *end, int depth, int *is_map) {
    if (p >= end || (*p != '{' && *p != '[') || depth >= MAX_DEPTH) return 1;
    *is_map = *p == '{';
    char close = *is_map ? '}' : ']';
    l->n = 0;
    p = json_ws(p + 1, end);
    if (p < end && *p == close) return 0;
    for (;;) {
        if (l->n >= EACH_ENTRIES_MAX) return 1;
        if (l->n == l->cap && elist_reserve(l, l->cap ? 2 * l->cap : 64) < 0) return 1;
        entry_t *en = &l->e[l->n];
        en->k = NULL; en->kn = 0;
        if (*is_map) {
            val_t key;
            p = json_string(p, end, &key);  /* a key with escapes: hand back */
            if (!p) return 1;
            en->k = key.s; en->kn = key.n;
            p = json_ws(p, end);
            if (p >= end || *p != ':') return 1;
            p = json_ws(p + 1, end);
        }
        en->v = p;
        p = json_node(pl, -1, p, end, NULL, depth + 1);
        if (!p) return 1;
        en->vend = p;
        l->n++;
        p = json_ws(p, end);
        if (p >= end) return 1;
        if (*p == ',') { p = json_ws(p + 1, end); continue; }
        if (*p == close) return 0;
        return 1;
    }
}

/* Whether two entries of a map have one key (the decoded dict holds one of them, at the first's
 * place with the last's value): the Python path decides. 1 also when there is no memory. */
static int dup_keys(Plan *pl, const elist_t *l) {
    Py_ssize_t n = l->n;
    if (n <= 16) {
        for (Py_ssize_t i = 1; i < n; i++)
            for (Py_ssize_t j = 0; j < i; j++)
                if (l->e[i].kn == l->e[j].kn && (l->e[i].kn == 0 || memcmp(l->e[i].k, l->e[j].k, l->e[i].kn) == 0))
                    return 1;
        return 0;
    }
    Py_ssize_t size = 64;
    while (size < 2 * n) size *= 2;
    if (pl->dup_cap < size) {
        Py_ssize_t *d = realloc(pl->dup, sizeof(Py_ssize_t) * size);
        if (!d) return 1;
        pl->dup = d; pl->dup_cap = size;
    }
    for (Py_ssize_t i = 0; i < size; i++) pl->dup[i] = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        const entry_t *e = &l->e[i];
        Py_ssize_t h = (Py_ssize_t)(fnv1a(e->k, e->kn) & (uint64_t)(size - 1));
        while (pl->dup[h] >= 0) {
            const entry_t *o = &l->e[pl->dup[h]];
            if (o->kn == e->kn && (e->kn == 0 || memcmp(o->k, e->k, e->kn) == 0)) return 1;
            h = (h + 1) & (size - 1);
        }
        pl->dup[h] = i;
    }
    return 0;
}

typedef struct {
    Plan *pl; buf_t *b; int nogil, json; val_t *vals; const tentry_t *topic_parts; Py_ssize_t rows;
    Py_ssize_t start;  /* b->len before the message's first row */
} ectx_t;

static inline int entry_nil(const ectx_t *x, const entry_t *e) {
    return x->json ? e->v[0] == 'n' : (unsigned char)e->v[0] == 0xc0;
}

/* A field value, as newest_flush reads it back (each: the row's values, not the record's). */
typedef struct { int type; int64_t i; double d; Py_ssize_t n; } fval_t;

/* One row (the element's and the record's values, the captures, in x->vals): rowhdr_t, its line
 * up to the time (format_vals), its field values. 0 or format_vals' codes; 1 past max_points. */
static int each_row(ectx_t *x) {
    Plan *pl = x->pl;
    if (++x->rows > pl->max_points) return 1;  /* too_many_points */
    /* an element with none of the fields read from it would make a point of the record's alone:
     * Python refuses it (missing_field, Mapper._map_rows) */
    int from_element = 0, present = 0;
    for (int f = 0; f < pl->nfields; f++) {
        int slot = pl->fields[f].slot;
        if (!pl->slot_elem[slot]) continue;
        from_element = 1;
        if (x->vals[slot].type != V_ABSENT && x->vals[slot].type != V_NIL) present = 1;
    }
    if (from_element && !present) return 1;
    buf_t *b = x->b;
    Py_ssize_t h = b->len;
    if (buf_grow(b, sizeof(rowhdr_t)) < 0) return x->nogil ? 2 : -1;
    b->len += sizeof(rowhdr_t);
    rowhdr_t hdr;
    memset(&hdr, 0, sizeof(hdr));
    int rc = format_vals(pl, b, x->nogil, x->vals, x->topic_parts, &hdr.series_n, &hdr.ts, &hdr.clock);
    if (rc) { b->len = h; return rc; }
    hdr.line_n = b->len - h - (Py_ssize_t)sizeof(rowhdr_t);
    Py_ssize_t at = b->len;
    for (int f = 0; f < pl->nfields; f++) {
        const val_t *v = &x->vals[pl->fields[f].slot];
        fval_t fv = {v->type, v->i, v->d, v->type == V_STR ? v->n : 0};
        if (buf_put(b, (const char *)&fv, sizeof(fv)) < 0 || (fv.n && buf_put(b, v->s, fv.n) < 0)) {
            b->len = h;
            return x->nogil ? 2 : -1;
        }
    }
    hdr.extra_n = b->len - at;
    memcpy(b->p + h, &hdr, sizeof(hdr));
    /* mapping.max_bytes: what the rows hold here (header, line, values) is at least what their
     * lines will hold (Mapper._map_rows' measure), so Python decides every message it refuses;
     * checked per row, a small message cannot make gigabytes before it goes back */
    if (pl->max_each_bytes > 0 && b->len - x->start > pl->max_each_bytes) return 1;
    return 0;
}

/* The each path from step si on, at the value p..end (depth: its containers above it); at its end
 * an element: its sources filled, its row made. 0: rows made; 1: hand back (anything Python
 * refuses or decides: a wrong kind, a fixed step that reaches no value, a key twice); 2, -1:
 * format_vals'. The rows are in paths.compile_paths' order: entries in the decoded order (a map's
 * as sent: a key twice goes back), alternatives <a:x|y> in their listed order, null skipped. */
static int each_walk(ectx_t *x, int si, const char *p, const char *end, int depth) {
    Plan *pl = x->pl;
    if (si == pl->neach) {
        for (int s = 0; s < pl->nslots; s++)
            if (pl->slot_elem[s]) x->vals[s].type = V_ABSENT;
        if (++pl->gen == 0) { memset(pl->seen, 0, sizeof(pl->seen)); pl->gen = 1; }
        if (x->json) {
            if (json_node(pl, pl->eroot, p, end, x->vals, depth) != end) return 1;
        } else if (mp_node(pl, pl->eroot, (const unsigned char *)p, (const unsigned char *)end, x->vals, depth) != end - p) {
            return 1;
        }
        return each_row(x);
    }
    const estep_t *st = &pl->esteps[si];
    elist_t *l = &pl->elists[si];  /* this step's own: the steps below use theirs */
    int is_map = 0;
    int rc = x->json ? json_entries(pl, l, p, end, depth, &is_map)
                     : mp_entries(l, (const unsigned char *)p, (const unsigned char *)end, depth, &is_map);
    if (rc) return 1;
    if (is_map != (st->kind == E_KEY || st->kind == E_KEYS)) return 1;  /* wrong_type */
    if (is_map && dup_keys(pl, l)) return 1;
    switch (st->kind) {
    case E_KEY:
        for (Py_ssize_t i = 0; i < l->n; i++) {
            const entry_t *e = &l->e[i];
            if (e->kn == st->key_n && (e->kn == 0 || memcmp(e->k, st->key, e->kn) == 0)) {
                if (entry_nil(x, e)) return 1;  /* missing_field */
                return each_walk(x, si + 1, e->v, e->vend, depth + 1);
            }
        }
        return 1;  /* missing_field */
    case E_INDEX: {
        int64_t i = st->index < 0 ? st->index + (int64_t)l->n : st->index;
        if (i < 0 || i >= (int64_t)l->n || entry_nil(x, &l->e[i])) return 1;  /* missing_field */
        return each_walk(x, si + 1, l->e[i].v, l->e[i].vend, depth + 1);
    }
    case E_ITEMS:
        for (Py_ssize_t i = 0; i < l->n; i++) {
            const entry_t *e = &l->e[i];
            if (entry_nil(x, e)) continue;
            if (st->capture >= 0) {  /* str(index) */
                buf_t t = {pl->cap_text[st->capture], 0, 24, 1};
                buf_put_int(&t, (int64_t)i);
                val_t *v = &x->vals[pl->capture_slot[st->capture]];
                v->type = V_STR; v->s = pl->cap_text[st->capture]; v->n = t.len;
            }
            if ((rc = each_walk(x, si + 1, e->v, e->vend, depth + 1)) != 0) return rc;
        }
        return 0;
    default:  /* E_KEYS */
        for (Py_ssize_t a = 0; a < (st->nonly ? st->nonly : l->n); a++) {
            const entry_t *e = NULL;
            if (!st->nonly) {
                e = &l->e[a];
            } else {
                for (Py_ssize_t i = 0; i < l->n && !e; i++)
                    if (l->e[i].kn == st->only_n[a] && (!l->e[i].kn || memcmp(l->e[i].k, st->only[a], l->e[i].kn) == 0))
                        e = &l->e[i];
                if (!e) continue;  /* m.get(key) is None */
            }
            if (entry_nil(x, e)) continue;
            if (st->capture >= 0) {
                val_t *v = &x->vals[pl->capture_slot[st->capture]];
                v->type = V_STR; v->s = e->k; v->n = e->kn;
            }
            if ((rc = each_walk(x, si + 1, e->v, e->vend, depth + 1)) != 0) return rc;
        }
        return 0;
    }
}

/* Every row of a message with `each` into b (format_line's codes; *rows_out: how many). The record
 * was read (parse_record: the whole message checked, the `$` sources filled); no row (no_points)
 * or more than max_points go back; so does anything a row's format_vals does not take. */
static int format_each(Plan *pl, buf_t *b, int nogil, const char *payload, Py_ssize_t n, val_t *vals,
                       const tentry_t *topic_parts, Py_ssize_t *rows_out) {
    ectx_t x = {pl, b, nogil, pl->framing != F_MSGPACK, vals, topic_parts, 0, b->len};
    Py_ssize_t start = b->len;
    const char *p = payload, *end = payload + n;
    if (x.json) p = json_ws(p, end);
    int rc = each_walk(&x, 0, p, end, 0);
    for (int i = 0; i < pl->neach; i++)  /* a huge container's entries are not kept (libc: no GIL needed) */
        if (pl->elists[i].cap > EACH_KEEP) { free(pl->elists[i].e); pl->elists[i].e = NULL; pl->elists[i].cap = 0; }
    if (pl->dup_cap > 2 * EACH_KEEP) { free(pl->dup); pl->dup = NULL; pl->dup_cap = 0; }
    if (rc == 0 && x.rows == 0) rc = 1;  /* no_points */
    if (rc) { b->len = start; return rc; }
    *rows_out = x.rows;
    return 0;
}

static int claim_time(Plan *pl, PyObject *series, int64_t *ts);
static int newest_note(Plan *pl, PyObject *series, int64_t ts, const char *payload, Py_ssize_t n);

/* The rows format_each wrote at src, finished into b (with the GIL) as finish_line finishes one
 * line, in Mapper._map_rows' order: every row's receive clock (rows are built before any claim),
 * then each row's claim, then (every row claimed) the newest point per series. 0: complete; 1:
 * hand back (nothing claimed); -1: an exception (one claim raised: the message is refused with it,
 * the rows before it keep their claims, as in Python). b is rolled back unless 0. */
static int finish_rows(Plan *pl, buf_t *b, char *src, Py_ssize_t rows, int track_newest) {
    Py_ssize_t start = b->len;
    rowhdr_t h;
    char *q = src;
    for (Py_ssize_t r = 0; r < rows; r++, q += sizeof(h) + h.line_n + h.extra_n) {
        memcpy(&h, q, sizeof(h));
        if (!h.clock) continue;
        PyObject *t = PyObject_CallObject(pl->clock, NULL);
        if (!t) goto fail;
        int over = 0;
        h.ts = PyLong_AsLongLongAndOverflow(t, &over);
        Py_DECREF(t);
        if (PyErr_Occurred()) goto fail;
        if (over || h.ts < pl->tmin || h.ts > pl->tmax) goto back;
        h.clock = 0;
        memcpy(q, &h, sizeof(h));
    }
    q = src;
    for (Py_ssize_t r = 0; r < rows; r++, q += sizeof(h) + h.line_n + h.extra_n) {
        memcpy(&h, q, sizeof(h));
        const char *line = q + sizeof(h);
        if (buf_put(b, line, h.line_n) < 0) goto fail;
        PyObject *series = series_str(pl, line, h.series_n);
        if (!series) goto fail;
        int claimed = claim_time(pl, series, &h.ts);
        Py_DECREF(series);
        if (claimed > 0) {
            if (r == 0) goto back;
            /* a row claimed already: handing back would claim it twice (never seen: no memory) */
            PyErr_SetString(PyExc_RuntimeError, "the uniqueness window could not be read for a row of each");
            goto fail;
        }
        if (claimed < 0) goto fail;
        memcpy(q, &h, sizeof(h));
        if (buf_putc(b, ' ') < 0 || buf_put_int(b, h.ts) < 0 || buf_putc(b, '\n') < 0) goto fail;
    }
    if (track_newest) {
        q = src;
        for (Py_ssize_t r = 0; r < rows; r++, q += sizeof(h) + h.line_n + h.extra_n) {
            memcpy(&h, q, sizeof(h));
            PyObject *series = series_str(pl, q + sizeof(h), h.series_n);
            if (!series) goto fail;
            int bad = newest_note(pl, series, h.ts, q + sizeof(h) + h.line_n, h.extra_n) < 0;
            Py_DECREF(series);
            if (bad) goto fail;
        }
    }
    return 0;
back:
    b->len = start;
    return 1;
fail:
    b->len = start;
    return -1;
}

/* each: a row's field values (each_row wrote them) into vals, as parse_record fills them. */
static int row_values(Plan *pl, const char *p, Py_ssize_t n, val_t *vals) {
    const char *end = p + n;
    for (int f = 0; f < pl->nfields; f++) {
        fval_t fv;
        if (end - p < (Py_ssize_t)sizeof(fv)) return 1;
        memcpy(&fv, p, sizeof(fv));
        p += sizeof(fv);
        if (fv.n < 0 || end - p < fv.n) return 1;
        val_t *v = &vals[pl->fields[f].slot];
        v->type = fv.type; v->i = fv.i; v->d = fv.d; v->s = p; v->n = fv.n;
        p += fv.n;
    }
    return p == end ? 0 : 1;
}

/* The rest of a line format_line wrote at b->p + start (with the GIL): the receive clock if
 * asked, the uniqueness claim, the newest point per series, the time. 0: line complete; 1: hand
 * back; -1: exception (the message is refused with it when it came from claim). b is rolled
 * back to start unless 0. */
static int finish_line(Plan *pl, buf_t *b, Py_ssize_t start, Py_ssize_t series_n, int64_t ts, int clock,
                       const char *payload, Py_ssize_t n, int track_newest) {
    if (clock) {  /* drawn once per message C maps, in message order */
        PyObject *r = PyObject_CallObject(pl->clock, NULL);
        if (!r) goto fail;
        int over = 0;
        ts = PyLong_AsLongLongAndOverflow(r, &over);
        Py_DECREF(r);
        if (PyErr_Occurred()) goto fail;
        if (over || ts < pl->tmin || ts > pl->tmax) goto back;
    }
    /* uniqueness: from here on the message is this path's */
    PyObject *series = series_str(pl, b->p + start, series_n);
    if (!series) goto fail;
    int claimed = claim_time(pl, series, &ts);
    if (claimed != 0) { Py_DECREF(series); if (claimed > 0) goto back; goto fail; }
    if (track_newest && newest_note(pl, series, ts, payload, n) < 0) { Py_DECREF(series); goto fail; }
    Py_DECREF(series);
    if (buf_putc(b, ' ') < 0 || buf_put_int(b, ts) < 0 || buf_putc(b, '\n') < 0) goto fail;
    return 0;
back:
    b->len = start;
    return 1;
fail:
    b->len = start;
    return -1;
}

/* One message, with the GIL, into pl->out. 0: line appended (each: *rows lines); 1: hand back (nothing changed);
 * -1: exception (the message is refused with it when it came from claim; out is rolled back). */
static int one(Plan *pl, const char *topic, Py_ssize_t topic_n, const char *payload, Py_ssize_t n,
               int track_newest, Py_ssize_t *rows) {
    buf_t *b = pl->each ? &pl->rows : &pl->out;  /* each: the rows, then finished into out */
    if (pl->each) pl->rows.len = 0;
    Py_ssize_t start = b->len, series_n = 0;
    int64_t ts = 0;
    int clock = 0;
    int rc = format_line(pl, b, 0, topic, topic_n, payload, n, &series_n, &ts, &clock, rows);
    if (rc != 0) return rc;
    if (pl->each) {
        rc = finish_rows(pl, &pl->out, pl->rows.p, *rows, track_newest);
        if (pl->rows.cap > (8 << 20)) { free(pl->rows.p); pl->rows.p = NULL; pl->rows.cap = 0; }
        pl->rows.len = 0;
        return rc;
    }
    return finish_line(pl, b, start, series_n, ts, clock, payload, n, track_newest);
}

/* ---- the Python type ---------------------------------------------------------------------- */

static char *copy_bytes(PyObject *o, Py_ssize_t *n) {
    char *s;
    if (PyBytes_AsStringAndSize(o, &s, n) < 0) return NULL;
    char *c = PyMem_Malloc(*n ? *n : 1);
    if (!c) { PyErr_NoMemory(); return NULL; }
    if (*n) memcpy(c, s, *n);
    return c;
}

static int new_node(Plan *pl, int parent) {
    if (pl->nnodes >= MAX_NODES) { PyErr_SetString(PyExc_ValueError, "too many path steps"); return -1; }
    int c = pl->nnodes++;
    node_t *nd = &pl->nodes[c];
    memset(nd, 0, sizeof(*nd));
    nd->slot = -1; nd->child = -1; nd->next = -1;
    if (parent >= 0) { nd->next = pl->nodes[parent].child; pl->nodes[parent].child = c; }
    return c;
}

/* The slot of a path (a tuple of steps: bytes, a key; int, an index), in the trie; -2: error.
 * With each, a path that starts with None is read from the element (its trie: eroot), and may
 * have no step (`.`: the element itself). */
static int add_path(Plan *pl, PyObject *steps) {
    if (pl->nnodes == 0 && new_node(pl, -1) < 0) return -2;
    Py_ssize_t count = PyTuple_Size(steps), first = 0;
    int ni = 0;
    if (count >= 1 && PyTuple_GetItem(steps, 0) == Py_None) {
        if (!pl->each) { PyErr_SetString(PyExc_ValueError, "a path from the element needs each"); return -2; }
        ni = pl->eroot;
        first = 1;
    } else if (count < 1) {
        PyErr_SetString(PyExc_ValueError, "an empty path");
        return -2;
    }
    int element = first == 1;
    for (Py_ssize_t i = first; i < count; i++) {
        PyObject *step = PyTuple_GetItem(steps, i);
        if (!step) return -2;
        int c = -1;
        if (PyBytes_Check(step)) {
            char *k; Py_ssize_t kn;
            if (PyBytes_AsStringAndSize(step, &k, &kn) < 0) return -2;
            c = child_by_key(pl, &pl->nodes[ni], k, kn);
            if (c < 0) {
                if ((c = new_node(pl, ni)) < 0) return -2;
                if (!(pl->nodes[c].key = copy_bytes(step, &pl->nodes[c].key_n))) return -2;
                pl->nodes[ni].keys++;
            }
        } else {
            long long index = PyLong_AsLongLong(step);
            if (index == -1 && PyErr_Occurred()) return -2;
            for (int k = pl->nodes[ni].child; k >= 0; k = pl->nodes[k].next)
                if (pl->nodes[k].by_index && pl->nodes[k].index == index) { c = k; break; }
            if (c < 0) {
                if ((c = new_node(pl, ni)) < 0) return -2;
                pl->nodes[c].by_index = 1;
                pl->nodes[c].index = index;
                pl->nodes[ni].indexes++;
            }
        }
        ni = c;
    }
    if (pl->nodes[ni].slot >= 0) return pl->nodes[ni].slot;
    if (pl->nslots >= MAX_SLOTS) { PyErr_SetString(PyExc_ValueError, "too many keys"); return -2; }
    int k = pl->nslots;
    pl->slot_key[k] = NULL;
    pl->slot_n[k] = -1;  /* never a top-level key of the flat parsers */
    if (!(pl->slot_name[k] = PyObject_Str(steps))) return -2;
    pl->slot_elem[k] = element;
    pl->nslots++;
    pl->nodes[ni].slot = k;
    return k;
}

static int add_slot(Plan *pl, PyObject *key) {
    char *s; Py_ssize_t n;
    if (pl->nested) {  /* every source is a path here, a top-level key one of one step */
        if (PyTuple_Check(key)) return add_path(pl, key);
        PyObject *steps = PyTuple_Pack(1, key);
        if (!steps) return -2;
        int slot = add_path(pl, steps);
        Py_DECREF(steps);
        return slot;
    }
    if (PyBytes_AsStringAndSize(key, &s, &n) < 0) return -2;
    int found = find_slot(pl, s, n);
    if (found >= 0) return found;
    if (pl->nslots >= MAX_SLOTS) { PyErr_SetString(PyExc_ValueError, "too many keys"); return -2; }
    int k = pl->nslots;
    if (!(pl->slot_key[k] = copy_bytes(key, &pl->slot_n[k]))) return -2;
    if (!(pl->slot_name[k] = PyUnicode_DecodeUTF8(s, n, "strict"))) return -2;
    pl->nslots++;
    return k;
}

/* each: [(kind, key or index, capture, alternatives)] (E_KEY: bytes; E_INDEX: int; E_ITEMS, E_KEYS:
 * the capture's number or -1; E_KEYS: a tuple of bytes or None). The record's trie gets node 0,
 * the element's its own root; each capture a slot. */
static int init_each(Plan *pl, PyObject *each, Py_ssize_t max_points) {
    if (!pl->nested) { PyErr_SetString(PyExc_ValueError, "each needs nested (paths)"); return -1; }
    if (max_points < 1) { PyErr_SetString(PyExc_ValueError, "max_points"); return -1; }
    PyObject *seq = PySequence_Fast(each, "each");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Size(seq);
    int bad = n < 1 || n > MAX_EACH;
    if (bad) PyErr_SetString(PyExc_ValueError, "each: 1 to 8 steps");
    pl->each = 1;
    pl->max_points = max_points;
    if (!bad && (new_node(pl, -1) < 0 || (pl->eroot = new_node(pl, -1)) < 0)) bad = 1;
    for (Py_ssize_t i = 0; !bad && i < n; i++) {
        PyObject *item = PySequence_GetItem(seq, i), *arg, *only;
        int kind, capture;
        estep_t *st = &pl->esteps[i];
        memset(st, 0, sizeof(*st));
        if (!item || !PyArg_ParseTuple(item, "iOiO", &kind, &arg, &capture, &only)) { Py_XDECREF(item); bad = 1; break; }
        st->kind = kind;
        st->capture = -1;
        pl->neach = (int)i + 1;
        if (kind == E_KEY) {
            if (!(st->key = copy_bytes(arg, &st->key_n))) bad = 1;
        } else if (kind == E_INDEX) {
            long long index = PyLong_AsLongLong(arg);
            if (index == -1 && PyErr_Occurred()) bad = 1;
            st->index = index;
        } else if (kind == E_ITEMS || kind == E_KEYS) {
            if (capture >= 0) {
                if (pl->ncaptures >= MAX_CAPTURES || pl->nslots >= MAX_SLOTS) {
                    PyErr_SetString(PyExc_ValueError, "too many captures");
                    bad = 1;
                } else {
                    int k = pl->nslots;
                    pl->slot_key[k] = NULL;
                    pl->slot_n[k] = -1;
                    if (!(pl->slot_name[k] = PyUnicode_FromFormat("<capture %d>", capture))) bad = 1;
                    else { pl->nslots++; st->capture = pl->ncaptures; pl->capture_slot[pl->ncaptures++] = k; }
                    if (!bad && capture != st->capture) { PyErr_SetString(PyExc_ValueError, "captures in order"); bad = 1; }
                }
            }
            if (!bad && kind == E_KEYS && only != Py_None) {
                PyObject *alts = PySequence_Fast(only, "alternatives");
                Py_ssize_t na = alts ? PySequence_Size(alts) : -1;
                if (na < 1) { if (alts) PyErr_SetString(PyExc_ValueError, "alternatives"); bad = 1; }
                else if (!(st->only = PyMem_Calloc(na, sizeof(char *))) || !(st->only_n = PyMem_Calloc(na, sizeof(Py_ssize_t)))) {
                    PyErr_NoMemory();
                    bad = 1;
                }
                for (Py_ssize_t a = 0; !bad && a < na; a++) {
                    PyObject *alt = PySequence_GetItem(alts, a);
                    if (!alt || !(st->only[a] = copy_bytes(alt, &st->only_n[a]))) bad = 1;
                    else st->nonly = (int)a + 1;
                    Py_XDECREF(alt);
                }
                Py_XDECREF(alts);
            }
        } else {
            PyErr_SetString(PyExc_ValueError, "unknown each step");
            bad = 1;
        }
        Py_DECREF(item);
    }
    Py_DECREF(seq);
    return bad ? -1 : 0;
}

static int Plan_init(PyObject *self, PyObject *args, PyObject *kwds) {
    Plan *pl = (Plan *)self;
    static char *kw[] = {"framing", "max_frame", "measurement", "tags", "fields", "time_key", "time_unit",
                         "time_rule", "key_check", "uniq_mode", "uniq_state", "uniq_claim", "tmin", "tmax",
                         "trim", "window", "field_order", "delimiter", "ahead", "behind", "derived",
                         "topic_rule", "topic_groups", "time_parse", "clock", "nested", "each", "max_points",
                         "max_bytes", NULL};
    int framing, time_rule, uniq_mode, topic_groups = 0, nested = 0;
    Py_ssize_t max_frame, key_check, trim, window;
    long long time_unit, tmin, tmax, ahead = -1, behind = -1;
    PyObject *measurement, *tags, *fields, *time_key, *uniq_state, *uniq_claim, *order, *delimiter;
    PyObject *derived = Py_None, *topic_rule = Py_None, *time_parse = Py_None, *clock = Py_None, *each = Py_None;
    Py_ssize_t max_points = 0, max_each_bytes = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "inSOOOLiniOOLLnnOO|LLOOiOOpOnn", kw, &framing, &max_frame, &measurement,
                                     &tags, &fields, &time_key, &time_unit, &time_rule, &key_check, &uniq_mode,
                                     &uniq_state, &uniq_claim, &tmin, &tmax, &trim, &window, &order, &delimiter,
                                     &ahead, &behind, &derived, &topic_rule, &topic_groups, &time_parse, &clock, &nested,
                                     &each, &max_points, &max_each_bytes))
        return -1;
    pl->max_each_bytes = max_each_bytes > 0 ? max_each_bytes : 0;
    pl->ahead = ahead;
    pl->behind = behind;
    pl->nested = nested;
    if (nested && framing != F_MSGPACK && framing != F_JSON && framing != F_TEXT_JSON) {
        PyErr_SetString(PyExc_ValueError, "paths need msgpack or JSON");
        return -1;
    }
    if (pl->measurement) { PyErr_SetString(PyExc_RuntimeError, "Plan is initialised once"); return -1; }
    pl->framing = framing;
    pl->max_frame = max_frame;
    if (!(pl->measurement = copy_bytes(measurement, &pl->measurement_n))) return -1;
    if (each != Py_None && init_each(pl, each, max_points) < 0) return -1;
    PyObject *seq = PySequence_Fast(tags, "tags");
    if (!seq) return -1;
    Py_ssize_t nt = PySequence_Size(seq);
    if (nt > MAX_TAGS) { Py_DECREF(seq); PyErr_SetString(PyExc_ValueError, "too many tags"); return -1; }
    for (Py_ssize_t i = 0; i < nt; i++) {
        /* (kind, key, part, optional, default, src, group) */
        PyObject *item = PySequence_GetItem(seq, i), *key, *part, *dflt = Py_None;
        int optional = 1, kind = T_RECORD, src = 0, group = 0;
        if (!item || !PyArg_ParseTuple(item, "iOSpOii", &kind, &key, &part, &optional, &dflt, &src, &group)) {
            Py_XDECREF(item); Py_DECREF(seq); return -1;
        }
        tag_t *t = &pl->tags[pl->ntags];
        memset(t, 0, sizeof(*t));
        t->kind = kind;
        t->optional = optional;
        t->slot = -1;
        t->src = src;
        t->group = group;
        int bad = 0;
        if (kind == T_CAPTURE) {  /* a captured key: a record tag whose value is the capture's slot */
            if (group < 0 || group >= pl->ncaptures) { PyErr_SetString(PyExc_ValueError, "no such capture"); bad = 1; }
            else { t->kind = T_RECORD; t->slot = pl->capture_slot[group]; }
            if (!bad && dflt != Py_None && !(t->dflt = copy_bytes(dflt, &t->dflt_n))) bad = 1;
        } else if (kind == T_RECORD) {
            t->slot = add_slot(pl, key);
            if (t->slot == -2) bad = 1;
            if (!bad && dflt != Py_None && !(t->dflt = copy_bytes(dflt, &t->dflt_n))) bad = 1;
        } else if (kind != T_STATIC && kind != T_DERIVED && kind != T_TOPIC) {
            PyErr_SetString(PyExc_ValueError, "unknown tag kind");
            bad = 1;
        }
        if (!bad && !(t->part = copy_bytes(part, &t->part_n))) bad = 1;
        Py_DECREF(item);
        if (bad) { Py_DECREF(seq); return -1; }
        pl->ntags++;
    }
    Py_DECREF(seq);
    seq = PySequence_Fast(fields, "fields");
    if (!seq) return -1;
    Py_ssize_t nf = PySequence_Size(seq);
    if (nf > MAX_FIELDS || nf < 1) { Py_DECREF(seq); PyErr_SetString(PyExc_ValueError, "1 to 32 fields"); return -1; }
    for (Py_ssize_t i = 0; i < nf; i++) {
        PyObject *item = PySequence_GetItem(seq, i), *key, *prefix, *name = NULL;
        int kind;
        if (!item || !PyArg_ParseTuple(item, "OSi|U", &key, &prefix, &kind, &name)) {
            Py_XDECREF(item); Py_DECREF(seq); return -1;
        }
        field_t *f = &pl->fields[pl->nfields];
        f->slot = add_slot(pl, key);
        f->kind = kind;
        f->prefix = copy_bytes(prefix, &f->prefix_n);
        if (f->slot >= 0) f->name = Py_NewRef(name ? name : pl->slot_name[f->slot]);
        Py_DECREF(item);
        if (f->slot == -2 || !f->prefix) { Py_DECREF(seq); return -1; }
        pl->nfields++;
    }
    Py_DECREF(seq);
    pl->time_slot = -1;
    if (time_key != Py_None && (pl->time_slot = add_slot(pl, time_key)) == -2) return -1;
    if (derived != Py_None) {  /* [(source key, rule, groups)] */
        seq = PySequence_Fast(derived, "derived");
        if (!seq) return -1;
        Py_ssize_t nd = PySequence_Size(seq);
        if (nd > MAX_DERIVED) { Py_DECREF(seq); PyErr_SetString(PyExc_ValueError, "too many derived tags"); return -1; }
        for (Py_ssize_t i = 0; i < nd; i++) {
            PyObject *item = PySequence_GetItem(seq, i), *key, *rule;
            int groups;
            if (!item || !PyArg_ParseTuple(item, "OOi", &key, &rule, &groups)) { Py_XDECREF(item); Py_DECREF(seq); return -1; }
            int slot = add_slot(pl, key);
            tcache_t *c = &pl->derived[pl->nderived];
            if (slot >= 0) {
                c->rule = Py_NewRef(rule);
                c->ngroups = groups;
                pl->derived_slot[pl->nderived] = slot;
                pl->nderived++;
            }
            Py_DECREF(item);
            if (slot < 0) { Py_DECREF(seq); return -1; }
            if (groups < 0 || groups > MAX_GROUPS) { Py_DECREF(seq); PyErr_SetString(PyExc_ValueError, "groups"); return -1; }
            if (!(c->table = PyMem_Calloc(TCACHE_SIZE, sizeof(tentry_t)))) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
        }
        Py_DECREF(seq);
    }
    if (topic_rule != Py_None) {
        if (topic_groups < 0 || topic_groups > MAX_GROUPS) { PyErr_SetString(PyExc_ValueError, "topic groups"); return -1; }
        if (!(pl->topic = PyMem_Calloc(1, sizeof(tcache_t)))) { PyErr_NoMemory(); return -1; }
        pl->topic->rule = Py_NewRef(topic_rule);
        pl->topic->ngroups = topic_groups;
        if (!(pl->topic->table = PyMem_Calloc(TCACHE_SIZE, sizeof(tentry_t)))) { PyErr_NoMemory(); return -1; }
    }
    for (int t = 0; t < pl->ntags; t++) {  /* every derived or topic tag refers to a group that exists */
        tag_t *tag = &pl->tags[t];
        if ((tag->kind == T_DERIVED && (tag->src < 0 || tag->src >= pl->nderived || tag->group < 0 ||
                                        tag->group >= pl->derived[tag->src].ngroups)) ||
            (tag->kind == T_TOPIC && (!pl->topic || tag->group < 0 || tag->group >= pl->topic->ngroups))) {
            PyErr_SetString(PyExc_ValueError, "a tag refers to a group that does not exist");
            return -1;
        }
    }
    pl->time_unit = time_unit;
    pl->time_rule = time_rule;
    if (time_parse != Py_None) pl->time_parse = Py_NewRef(time_parse);
    if (clock != Py_None) pl->clock = Py_NewRef(clock);
    if (time_unit < 0 && !pl->time_parse) { PyErr_SetString(PyExc_ValueError, "a date string needs time_parse"); return -1; }
    pl->key_check = key_check;
    pl->uniq_mode = uniq_mode;
    Py_INCREF(uniq_state); pl->uniq_state = uniq_state;
    Py_INCREF(uniq_claim); pl->uniq_claim = uniq_claim;
    if (!PyDict_Check(uniq_state)) { PyErr_SetString(PyExc_TypeError, "uniq_state must be a dict"); return -1; }
    pl->tmin = tmin; pl->tmax = tmax; pl->trim = trim; pl->window = window;
    if (framing == F_DELIMITED) {
        seq = PySequence_Fast(order, "field_order");
        if (!seq) return -1;
        Py_ssize_t no = PySequence_Size(seq);
        if (no > MAX_ORDER || no < 1) { Py_DECREF(seq); PyErr_SetString(PyExc_ValueError, "field_order"); return -1; }
        for (Py_ssize_t i = 0; i < no; i++) {
            PyObject *name = PySequence_GetItem(seq, i);
            char *s; Py_ssize_t n;
            if (!name || PyBytes_AsStringAndSize(name, &s, &n) < 0) { Py_XDECREF(name); Py_DECREF(seq); return -1; }
            pl->order_slot[i] = find_slot(pl, s, n);
            Py_DECREF(name);
        }
        pl->norder = (int)no;
        Py_DECREF(seq);
        if (!(pl->delim = copy_bytes(delimiter, &pl->delim_n))) return -1;
        if (pl->delim_n < 1) { PyErr_SetString(PyExc_ValueError, "empty delimiter"); return -1; }
    } else if (framing != F_MSGPACK && framing != F_JSON && framing != F_TEXT_JSON) {
        PyErr_SetString(PyExc_ValueError, "unknown framing");
        return -1;
    }
    pl->scache = PyMem_Calloc(SCACHE_SIZE, sizeof(sentry_t));
    if (!pl->scache) { PyErr_NoMemory(); return -1; }
    return 0;
}

static void recs_release(Plan *pl);

static void Plan_dealloc(PyObject *self) {
    Plan *pl = (Plan *)self;
    PyTypeObject *tp = Py_TYPE(self);
    PyMem_Free(pl->measurement);
    for (int i = 0; i < pl->nslots; i++) { PyMem_Free(pl->slot_key[i]); Py_XDECREF(pl->slot_name[i]); }
    for (int i = 0; i < pl->nnodes; i++) PyMem_Free(pl->nodes[i].key);
    for (int i = 0; i < pl->neach; i++) {
        estep_t *st = &pl->esteps[i];
        PyMem_Free(st->key);
        for (int a = 0; a < st->nonly; a++) PyMem_Free(st->only[a]);
        PyMem_Free(st->only);
        PyMem_Free(st->only_n);
    }
    for (int i = 0; i < MAX_EACH; i++) free(pl->elists[i].e);
    free(pl->dup);
    free(pl->rows.p);
    for (int i = 0; i < pl->ntags; i++) { PyMem_Free(pl->tags[i].part); PyMem_Free(pl->tags[i].dflt); }
    for (int i = 0; i < pl->nderived; i++) tcache_free(&pl->derived[i]);
    if (pl->topic) { tcache_free(pl->topic); PyMem_Free(pl->topic); }
    for (int i = 0; i < pl->nfields; i++) { PyMem_Free(pl->fields[i].prefix); Py_XDECREF(pl->fields[i].name); }
    Py_XDECREF(pl->uniq_state);
    Py_XDECREF(pl->uniq_claim);
    if (pl->upend) {  /* empty between calls (uniq_settled): the buffers only */
        for (int i = 0; i < UPEND_MAX; i++) {
            Py_XDECREF(pl->upend[i].series);
            Py_XDECREF(pl->upend[i].times);
            PyMem_Free(pl->upend[i].add);
        }
        PyMem_Free(pl->upend);
    }
    Py_XDECREF(pl->time_parse);
    Py_XDECREF(pl->clock);
    PyMem_Free(pl->delim);
    free(pl->out.p);
    recs_release(pl);
    free(pl->stage.p);
    PyMem_Free(pl->recs);
    scache_clear(pl);
    PyMem_Free(pl->scache);
    for (int i = 0; i < pl->newest_cap; i++) { Py_XDECREF(pl->newest[i].series); PyMem_Free(pl->newest[i].payload); }
    PyMem_Free(pl->newest);
    free(pl->last_topic);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

/* The result of a call: (data, lines, taken, handed, error). */
static PyObject *result(Plan *pl, Py_ssize_t lines, Py_ssize_t taken, PyObject *handed, PyObject *error,
                        PyObject *newest) {
    if (newest != Py_None && newest_flush(pl, newest) < 0) {
        Py_XDECREF(handed); Py_XDECREF(error);
        return NULL;
    }
    PyObject *data = PyBytes_FromStringAndSize(pl->out.p, pl->out.len);
    if (pl->out.cap > (8 << 20)) { free(pl->out.p); pl->out.p = NULL; pl->out.cap = 0; }
    pl->out.len = 0;
    if (!data) { Py_XDECREF(handed); Py_XDECREF(error); return NULL; }
    pl->handled += lines;
    if (handed) pl->handed_back++;
    return Py_BuildValue("(NnnNN)", data, lines, taken, handed ? handed : Py_NewRef(Py_None),
                         error ? error : Py_NewRef(Py_None));
}

/* The exception claim raised, as a value (the message is refused with it). */
static PyObject *take_error(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value ? value : Py_NewRef(Py_None);
}

static int frames_of(PyObject *message, const char **t, Py_ssize_t *tn, const char **p, Py_ssize_t *pn,
                     int framing, Py_ssize_t max_frame) {
    /* 0: ok; 1: hand back (wrong frame count or a frame that is not bytes) */
    if (!PyList_Check(message) && !PyTuple_Check(message)) return 1;
    Py_ssize_t count = PySequence_Size(message);
    if (count != (MULTIPART(framing) ? 2 : 1)) return 1;
    PyObject *f0 = PySequence_GetItem(message, 0);
    if (!f0) { PyErr_Clear(); return 1; }
    char *s; Py_ssize_t n;
    int bad = !PyBytes_Check(f0) || PyBytes_AsStringAndSize(f0, &s, &n) < 0;
    Py_DECREF(f0);  /* the list keeps it alive */
    if (bad) { PyErr_Clear(); return 1; }
    if (MULTIPART(framing)) {
        PyObject *f1 = PySequence_GetItem(message, 1);
        if (!f1) { PyErr_Clear(); return 1; }
        char *s1; Py_ssize_t n1;
        bad = !PyBytes_Check(f1) || PyBytes_AsStringAndSize(f1, &s1, &n1) < 0;
        Py_DECREF(f1);
        if (bad) { PyErr_Clear(); return 1; }
        *t = s; *tn = n; *p = s1; *pn = n1;
        return 0;
    }
    const char *space = memchr(s, ' ', n);
    if (!space) return 1;
    *t = s; *tn = space - s; *p = space + 1; *pn = n - (space - s) - 1;
    if (n > max_frame) return 1;
    return 0;
}

/* map and drain hold the GIL throughout (the form before "Two phases", which fastpath.py uses);
 * they refuse a plan whose batch another thread has staged. */
static int plan_in_use(Plan *pl) {
    if (!pl->busy && !pl->nrecs) { pl->now_left = 0; return 0; }
    PyErr_SetString(PyExc_RuntimeError, "a compiled plan is used by one thread at a time: a batch is staged");
    return 1;
}

/* map(messages, start, newest) -> (data, lines, next, handed, error)
 * Maps messages[start:] (lists of frames as pyzmq gives them) until the first one this path
 * hands back (handed = that message, next = its index + 1) or the end (handed = None). */
static PyObject *Plan_map_(PyObject *self, PyObject *args);

static PyObject *Plan_map(PyObject *self, PyObject *args) {
    return uniq_settled((Plan *)self, Plan_map_(self, args));
}

static PyObject *Plan_map_(PyObject *self, PyObject *args) {
    Plan *pl = (Plan *)self;
    PyObject *messages, *newest;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "OnO", &messages, &start, &newest)) return NULL;
    if (plan_in_use(pl)) return NULL;
    if (!PyList_Check(messages)) { PyErr_SetString(PyExc_TypeError, "messages must be a list"); return NULL; }
    if (newest != Py_None && !PyDict_Check(newest)) { PyErr_SetString(PyExc_TypeError, "newest: dict or None"); return NULL; }
    Py_ssize_t total = PyList_Size(messages), lines = 0, i;
    int track = newest != Py_None;
    for (i = start; i < total; i++) {
        PyObject *message = PyList_GetItem(messages, i);  /* borrowed */
        const char *t, *p;
        Py_ssize_t tn, pn;
        Py_ssize_t rows = 1;
        int rc = frames_of(message, &t, &tn, &p, &pn, pl->framing, pl->max_frame);
        if (rc == 0) rc = one(pl, t, tn, p, pn, track, &rows);
        if (rc == 0) { lines += rows; continue; }
        if (rc > 0) return result(pl, lines, i + 1, Py_NewRef(message), NULL, newest);
        if (PyErr_ExceptionMatches(PyExc_MemoryError)) return NULL;
        return result(pl, lines, i + 1, Py_NewRef(message), take_error(), newest);
    }
    return result(pl, lines, i, NULL, NULL, newest);
}

/* The frames of a message libzmq holds, as a list of bytes (this message's, from `first` on). */
static PyObject *collect(void *socket, zmsg_t *msgs, int have) {
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    int more = 1;
    for (int k = 0; k < have; k++) {
        PyObject *b = PyBytes_FromStringAndSize(zmq_api.data(&msgs[k]), (Py_ssize_t)zmq_api.size(&msgs[k]));
        more = zmq_api.more(&msgs[k]);
        if (!b || PyList_Append(list, b) < 0) { Py_XDECREF(b); Py_DECREF(list); return NULL; }
        Py_DECREF(b);
    }
    while (more) {  /* the rest of a multipart message is already there: it arrives whole */
        zmsg_t m;
        zmq_api.init(&m);
        if (zmq_api.recv(&m, socket, ZMQ_DONTWAIT_) < 0) { zmq_api.close(&m); break; }
        PyObject *b = PyBytes_FromStringAndSize(zmq_api.data(&m), (Py_ssize_t)zmq_api.size(&m));
        more = zmq_api.more(&m);
        zmq_api.close(&m);
        if (!b || PyList_Append(list, b) < 0) { Py_XDECREF(b); Py_DECREF(list); return NULL; }
        Py_DECREF(b);
    }
    return list;
}

/* drain(socket_address, limit, newest[, max_bytes]) -> (data, lines, taken, handed, error, errno)
 * Receives up to `limit` messages without blocking, straight from libzmq, and maps them until
 * the first one this path hands back (handed: its frames; taken counts it), and until the output
 * holds at least `max_bytes` (0: unbounded; one message's line may pass it, never two). errno is
 * 0, or libzmq's error other than EAGAIN (the caller raises it as pyzmq would). */
static PyObject *Plan_drain_(PyObject *self, PyObject *args);

static PyObject *Plan_drain(PyObject *self, PyObject *args) {
    return uniq_settled((Plan *)self, Plan_drain_(self, args));
}

static PyObject *Plan_drain_(PyObject *self, PyObject *args) {
    Plan *pl = (Plan *)self;
    unsigned long long address;
    Py_ssize_t limit, max_bytes = 0;
    PyObject *newest;
    if (!PyArg_ParseTuple(args, "KnO|n", &address, &limit, &newest, &max_bytes)) return NULL;
    if (plan_in_use(pl)) return NULL;
    if (!zmq_api.recv) { PyErr_SetString(PyExc_RuntimeError, "libzmq is not bound"); return NULL; }
    if (newest != Py_None && !PyDict_Check(newest)) { PyErr_SetString(PyExc_TypeError, "newest: dict or None"); return NULL; }
    void *socket = (void *)(uintptr_t)address;
    int track = newest != Py_None;
    Py_ssize_t lines = 0, taken = 0;
    int error_no = 0;
    PyObject *handed = NULL, *error = NULL;
    zmsg_t m[2];
    while (taken < limit && (max_bytes <= 0 || pl->out.len < max_bytes)) {
        zmq_api.init(&m[0]);
        if (zmq_api.recv(&m[0], socket, ZMQ_DONTWAIT_) < 0) {
            int e = zmq_api.err();
            zmq_api.close(&m[0]);
            if (e != ZMQ_EAGAIN_) error_no = e;
            break;
        }
        taken++;
        int have = 1, rc = 1;
        Py_ssize_t rows = 1;
        if (zmq_api.more(&m[0])) {
            zmq_api.init(&m[1]);
            if (zmq_api.recv(&m[1], socket, ZMQ_DONTWAIT_) < 0) {
                zmq_api.close(&m[1]);  /* cannot happen: the frames of a message arrive together */
            } else {
                have = 2;
            }
        }
        const char *d0 = zmq_api.data(&m[0]);
        Py_ssize_t n0 = (Py_ssize_t)zmq_api.size(&m[0]);
        if (MULTIPART(pl->framing)) {
            if (have == 2 && !zmq_api.more(&m[1]))
                rc = one(pl, d0, n0, zmq_api.data(&m[1]), (Py_ssize_t)zmq_api.size(&m[1]), track, &rows);
        } else if (have == 1 && n0 <= pl->max_frame) {
            const char *space = memchr(d0, ' ', n0);
            if (space) rc = one(pl, d0, space - d0, space + 1, n0 - (space - d0) - 1, track, &rows);
        }
        if (rc < 0 && PyErr_ExceptionMatches(PyExc_MemoryError)) {
            for (int k = 0; k < have; k++) zmq_api.close(&m[k]);
            return NULL;
        }
        if (rc < 0) error = take_error();
        if (rc != 0) handed = collect(socket, m, have);
        for (int k = 0; k < have; k++) zmq_api.close(&m[k]);
        if (rc == 0) { lines += rows; continue; }
        if (!handed) { Py_XDECREF(error); return NULL; }
        break;
    }
    PyObject *r = result(pl, lines, taken, handed, error, newest);
    if (!r) return NULL;
    PyObject *out = Py_BuildValue("(Ni)", r, error_no);
    return out;
}

/* ---- Two phases: the stage without the GIL, the commit with it ------------------------------
 *
 * Plan.stage_zmq receives up to STAGE_MAX messages from libzmq and formats each one's line up to
 * its time into the plan's staging buffer (format_line, nogil), between Py_BEGIN_ALLOW_THREADS
 * and Py_END_ALLOW_THREADS: no Python object is touched there (no reference count, no PyMem_*,
 * no exception: libc's allocator, strtod_l, and what needs Python is marked S_GIL instead).
 * Plan.stage_frames does the same for messages pyzmq already received (their bytes held).
 * Plan.commit then runs with the GIL, in message order: the receive clock, the uniqueness claim
 * (the mapper's Python state), the newest point per series, the time; a message marked S_GIL is
 * mapped again with the GIL (one(), as before this split), one handed back goes to `slow` (the
 * Python path, called here at its place in the batch: the C newest points flushed first, as the
 * caller saw them before). Nothing the commit does depends on what the stage of a later message
 * did, and the stage depends on no Python state (only the plan's own caches, filled with the
 * GIL): so the lines, claims and hand-backs are those of one() run message by message.
 *
 * Ownership: the stage touches the plan's working state (staging buffer, records, the topic,
 * series and tag caches, the nested-path marks, each's entry lists) and the libzmq socket without the GIL. The
 * bridge gives each subscription its own Plan and its own socket, received by one thread (its
 * receive thread, or the one receive loop): pipeline.Subscription, app.py. A plan is owned by
 * the thread that staged a batch until that thread's commit ends (`busy`, `owner`: checked with
 * the GIL held): any other call meanwhile, from another thread or re-entered from `slow`, raises
 * RuntimeError instead of sharing the state. The socket must not be closed while a stage runs:
 * the bridge closes a subscription's socket only after its receive thread has ended. */

static void rec_release(rec_t *r) {
    for (int k = 0; k < r->have; k++) zmq_api.close(&r->m[k]);
    for (int k = 0; k < r->nextra; k++) zmq_api.close(&r->extra[k]);
    free(r->extra);
    r->extra = NULL; r->nextra = 0; r->have = 0;
    Py_CLEAR(r->message); Py_CLEAR(r->f[0]); Py_CLEAR(r->f[1]);
}

static void recs_release(Plan *pl) {
    for (int k = 0; k < pl->nrecs; k++) rec_release(&pl->recs[k]);
    pl->nrecs = 0;
    pl->stage.len = 0;
}

/* Whether a stage may start on this thread (with the GIL); sets the error if not. */
static int stage_begin(Plan *pl) {
    if (pl->busy || pl->nrecs) {
        PyErr_SetString(PyExc_RuntimeError, "a compiled plan is used by one thread at a time: a batch is "
                        "staged and not committed");
        return -1;
    }
    if (!pl->recs && !(pl->recs = PyMem_Calloc(STAGE_MAX, sizeof(rec_t)))) { PyErr_NoMemory(); return -1; }
    pl->stage.quiet = 1;
    pl->stage.len = 0;
    pl->now_left = 0;
    pl->busy = 1;
    pl->owner = PyThread_get_thread_ident();
    return 0;
}

/* Without the GIL: format a staged message's line (r->kind set). */
static void stage_one(Plan *pl, rec_t *r, const char *topic, Py_ssize_t topic_n, const char *payload,
                      Py_ssize_t n) {
    r->topic = topic; r->topic_n = topic_n; r->payload = payload; r->payload_n = n;
    r->at = pl->stage.len;
    r->rows = 1;
    int rc = format_line(pl, &pl->stage, 1, topic, topic_n, payload, n, &r->series_n, &r->ts, &r->clock, &r->rows);
    r->kind = rc == 0 ? S_LINE : rc == 2 ? S_GIL : S_BACK;
    r->line_n = pl->stage.len - r->at;
}

/* Without the GIL: the rest of a message whose last frame says more (it goes back whole). */
static void stage_extra(rec_t *r, void *socket) {
    int more = zmq_api.more(&r->m[r->have - 1]);
    int cap = 0;
    while (more) {
        zmsg_t m;
        zmq_api.init(&m);
        if (zmq_api.recv(&m, socket, ZMQ_DONTWAIT_) < 0) { zmq_api.close(&m); break; }
        more = zmq_api.more(&m);
        if (r->nextra == cap) {
            zmsg_t *p = realloc(r->extra, sizeof(zmsg_t) * (cap ? cap * 2 : 4));
            if (!p) { zmq_api.close(&m); continue; }  /* no memory: the frame is dropped, Python refuses the rest */
            r->extra = p; cap = cap ? cap * 2 : 4;
        }
        r->extra[r->nextra++] = m;
    }
}

/* Without the GIL: receive and stage up to `limit` messages. */
static int stage_zmq(Plan *pl, void *socket, Py_ssize_t limit, Py_ssize_t max_bytes, int *error_no) {
    int k = 0;
    pl->in_bytes = pl->in_largest = 0;
    /* max_bytes bounds the lines staged and the messages held: sixteen 15 MB messages handed back
     * (oversized) were held at once, and copied for Python, under a 256 MiB limit */
    while (k < limit && (max_bytes <= 0 || (pl->stage.len + 21 * (Py_ssize_t)k < max_bytes &&
                                            pl->in_bytes < max_bytes))) {
        rec_t *r = &pl->recs[k];
        zmq_api.init(&r->m[0]);
        if (zmq_api.recv(&r->m[0], socket, ZMQ_DONTWAIT_) < 0) {
            *error_no = zmq_api.err();  /* EAGAIN: nothing more queued */
            zmq_api.close(&r->m[0]);
            break;
        }
        r->have = 1;
        k++;
        if (zmq_api.more(&r->m[0])) {
            zmq_api.init(&r->m[1]);
            if (zmq_api.recv(&r->m[1], socket, ZMQ_DONTWAIT_) < 0) zmq_api.close(&r->m[1]);  /* cannot happen */
            else r->have = 2;
        }
        if (zmq_api.more(&r->m[r->have - 1])) stage_extra(r, socket);
        /* what was received (not the lines it makes: with each, far more): the message sizes
         * pipeline.Subscription.observe_size watches, as the Python path's receive gives them */
        Py_ssize_t got = 0;
        for (int f = 0; f < r->have; f++) got += (Py_ssize_t)zmq_api.size(&r->m[f]);
        for (int f = 0; f < r->nextra; f++) got += (Py_ssize_t)zmq_api.size(&r->extra[f]);
        pl->in_bytes += got;
        if (got > pl->in_largest) pl->in_largest = got;
        r->kind = S_BACK;
        if (r->nextra) continue;
        const char *d0 = zmq_api.data(&r->m[0]);
        Py_ssize_t n0 = (Py_ssize_t)zmq_api.size(&r->m[0]);
        if (MULTIPART(pl->framing)) {
            if (r->have == 2) stage_one(pl, r, d0, n0, zmq_api.data(&r->m[1]), (Py_ssize_t)zmq_api.size(&r->m[1]));
        } else if (r->have == 1 && n0 <= pl->max_frame) {
            const char *space = memchr(d0, ' ', n0);
            if (space) stage_one(pl, r, d0, space - d0, space + 1, n0 - (space - d0) - 1);
        }
    }
    return k;
}

/* stage_zmq(socket_address, limit, max_bytes) -> (taken, errno)
 * Receives up to min(limit, STAGE_MAX) messages without blocking, and (max_bytes > 0) about until
 * their lines hold max_bytes, and formats them, without the GIL; commit() must follow on this
 * thread. errno: libzmq's error that ended the stage (EAGAIN: nothing more queued), or 0. */
static PyObject *Plan_stage_zmq(PyObject *self, PyObject *args) {
    Plan *pl = (Plan *)self;
    unsigned long long address;
    Py_ssize_t limit, max_bytes = 0;
    if (!PyArg_ParseTuple(args, "Kn|n", &address, &limit, &max_bytes)) return NULL;
    if (!zmq_api.recv) { PyErr_SetString(PyExc_RuntimeError, "libzmq is not bound"); return NULL; }
    if (stage_begin(pl) < 0) return NULL;
    if (limit > STAGE_MAX) limit = STAGE_MAX;
    void *socket = (void *)(uintptr_t)address;
    int error_no = 0, n = 0;
    Py_BEGIN_ALLOW_THREADS
    n = stage_zmq(pl, socket, limit, max_bytes, &error_no);
    Py_END_ALLOW_THREADS
    pl->nrecs = n;
    pl->busy = 0;
    return Py_BuildValue("(ii)", n, error_no);
}

/* stage_frames(messages, start) -> count
 * Stages messages[start:start + count] (lists of frames as pyzmq gives them; count <= STAGE_MAX),
 * formatted without the GIL (the frames held meanwhile); commit() must follow on this thread. */
static PyObject *Plan_stage_frames(PyObject *self, PyObject *args) {
    Plan *pl = (Plan *)self;
    PyObject *messages;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "On", &messages, &start)) return NULL;
    if (!PyList_Check(messages)) { PyErr_SetString(PyExc_TypeError, "messages must be a list"); return NULL; }
    Py_ssize_t total = PyList_Size(messages);
    if (start < 0 || start > total) { PyErr_SetString(PyExc_IndexError, "start"); return NULL; }
    if (stage_begin(pl) < 0) return NULL;
    int n = total - start > STAGE_MAX ? STAGE_MAX : (int)(total - start);
    int ok[STAGE_MAX];
    for (int k = 0; k < n; k++) {
        rec_t *r = &pl->recs[k];
        PyObject *message = PyList_GetItem(messages, start + k);  /* borrowed */
        r->message = Py_NewRef(message);
        r->kind = S_BACK;
        ok[k] = frames_of(message, &r->topic, &r->topic_n, &r->payload, &r->payload_n, pl->framing,
                          pl->max_frame) == 0;
        if (ok[k]) {  /* hold the frames the pointers are into (the list may change meanwhile) */
            for (int i = 0; i < (MULTIPART(pl->framing) ? 2 : 1); i++)
                if (!(r->f[i] = PySequence_GetItem(message, i))) { PyErr_Clear(); ok[k] = 0; }
        }
    }
    pl->nrecs = n;
    Py_BEGIN_ALLOW_THREADS
    for (int k = 0; k < n; k++) {
        rec_t *r = &pl->recs[k];
        if (ok[k]) stage_one(pl, r, r->topic, r->topic_n, r->payload, r->payload_n);
    }
    Py_END_ALLOW_THREADS
    pl->busy = 0;
    return PyLong_FromLong(n);
}

/* A handed-back message's frames, as `slow` takes them (a new reference). */
static PyObject *rec_frames(rec_t *r) {
    if (r->message) return Py_NewRef(r->message);
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    for (int k = 0; k < r->have + r->nextra; k++) {
        zmsg_t *m = k < r->have ? &r->m[k] : &r->extra[k - r->have];
        PyObject *b = PyBytes_FromStringAndSize(zmq_api.data(m), (Py_ssize_t)zmq_api.size(m));
        if (!b || PyList_Append(list, b) < 0) { Py_XDECREF(b); Py_DECREF(list); return NULL; }
        Py_DECREF(b);
    }
    return list;
}

/* The C newest points of this call dropped (after an exception). */
static void newest_drop(Plan *pl) {
    for (int i = 0; i < pl->newest_used; i++) { Py_CLEAR(pl->newest[i].series); pl->newest[i].used = 0; }
    pl->newest_used = 0;
}

/* commit(newest, slow) -> (data, lines, compiled)  (compiled: messages C mapped; lines: points)
 * With the GIL, in message order, what the stage left: each line's clock, claim, newest point and
 * time; S_GIL messages mapped by one(); each message handed back given to slow(frames, error)
 * (error: the exception claim raised for it, else None), whose bytes (a line) follow in data.
 * lines: every line in data; compiled: of them, C's. keep: data stays in the plan's output after
 * what the commits with keep before left there (a burst's batches, without a bytes object each
 * and their join), its size returned instead, until take(); a commit that fails drops its own
 * batch only. */
static PyObject *Plan_commit_(PyObject *self, PyObject *args);

static PyObject *Plan_commit(PyObject *self, PyObject *args) {
    return uniq_settled((Plan *)self, Plan_commit_(self, args));
}

static PyObject *Plan_commit_(PyObject *self, PyObject *args) {
    Plan *pl = (Plan *)self;
    PyObject *newest, *slow;
    int keep = 0;
    if (!PyArg_ParseTuple(args, "OO|p", &newest, &slow, &keep)) return NULL;
    if (newest != Py_None && !PyDict_Check(newest)) { PyErr_SetString(PyExc_TypeError, "newest: dict or None"); return NULL; }
    if (pl->busy || (pl->nrecs && pl->owner != PyThread_get_thread_ident())) {
        PyErr_SetString(PyExc_RuntimeError, "a compiled plan is used by one thread at a time: the batch "
                        "belongs to another thread");
        return NULL;
    }
    pl->busy = 1;
    int track = newest != Py_None;
    Py_ssize_t lines = 0, compiled = 0, points = 0;
    buf_t *out = &pl->out;
    Py_ssize_t kept = keep ? out->len : 0;  /* keep: the batches before this one stay (take) */
    for (int k = 0; k < pl->nrecs; k++) {
        rec_t *r = &pl->recs[k];
        int rc = 1;
        Py_ssize_t rows = 1;
        if (r->kind == S_LINE && pl->each) {
            rows = r->rows;
            rc = finish_rows(pl, out, pl->stage.p + r->at, rows, track);
        } else if (r->kind == S_LINE) {
            Py_ssize_t start = out->len;
            if (buf_put(out, pl->stage.p + r->at, r->line_n) < 0) goto fail;
            rc = finish_line(pl, out, start, r->series_n, r->ts, r->clock, r->payload, r->payload_n, track);
        } else if (r->kind == S_GIL) {
            pl->with_gil++;
            rc = one(pl, r->topic, r->topic_n, r->payload, r->payload_n, track, &rows);
        }
        if (rc == 0) { compiled++; points += rows; continue; }
        if (rc < 0 && PyErr_ExceptionMatches(PyExc_MemoryError)) goto fail;
        PyObject *error = rc < 0 ? take_error() : Py_NewRef(Py_None);
        PyObject *frames = rec_frames(r);
        if (!frames || (track && newest_flush(pl, newest) < 0)) { Py_XDECREF(frames); Py_DECREF(error); goto fail; }
        pl->handed_back++;
        if (uniq_settle(pl) < 0) { Py_DECREF(frames); Py_DECREF(error); goto fail; }
        PyObject *line = PyObject_CallFunctionObjArgs(slow, frames, error, NULL);
        Py_DECREF(frames);
        Py_DECREF(error);
        if (!line) goto fail;
        if (line != Py_None) {  /* a line (bytes), or each's points: a list of lines */
            int many = PyList_Check(line);
            Py_ssize_t count = many ? PyList_Size(line) : 1;
            for (Py_ssize_t i = 0; i < count; i++) {
                PyObject *one_line = many ? PyList_GetItem(line, i) : line;  /* borrowed */
                char *s; Py_ssize_t n;
                if (!one_line || PyBytes_AsStringAndSize(one_line, &s, &n) < 0 || buf_put(out, s, n) < 0 ||
                    buf_putc(out, '\n') < 0) {
                    Py_DECREF(line);
                    goto fail;
                }
                lines++;
            }
        }
        Py_DECREF(line);
    }
    recs_release(pl);
    pl->busy = 0;
    if (track && newest_flush(pl, newest) < 0) { out->len = kept; return NULL; }
    pl->handled += compiled;
    if (keep) return Py_BuildValue("(nnn)", out->len, lines + points, compiled);
    PyObject *data = PyBytes_FromStringAndSize(out->p, out->len);
    if (out->cap > (8 << 20)) { free(out->p); out->p = NULL; out->cap = 0; }
    out->len = 0;
    if (!data) return NULL;
    return Py_BuildValue("(Nnn)", data, lines + points, compiled);
fail:
    recs_release(pl);
    newest_drop(pl);
    out->len = kept;
    pl->busy = 0;
    return NULL;
}

/* take() -> bytes: what the commits with keep left in the output (the burst's lines), which is
 * then empty. */
static PyObject *Plan_take(PyObject *self, PyObject *unused) {
    (void)unused;
    Plan *pl = (Plan *)self;
    if (pl->busy) {
        PyErr_SetString(PyExc_RuntimeError, "a compiled plan is used by one thread at a time: a commit runs");
        return NULL;
    }
    buf_t *out = &pl->out;
    PyObject *data = PyBytes_FromStringAndSize(out->p, out->len);
    if (!data) return NULL;
    if (out->cap > (8 << 20)) { free(out->p); out->p = NULL; out->cap = 0; }
    out->len = 0;
    return data;
}

/* received_bytes() -> (bytes, largest): the messages the last stage_zmq received, as received. */
static PyObject *Plan_received_bytes(PyObject *self, PyObject *unused) {
    (void)unused;
    Plan *pl = (Plan *)self;
    return Py_BuildValue("(nn)", pl->in_bytes, pl->in_largest);
}

static PyObject *Plan_stats(PyObject *self, PyObject *unused) {
    (void)unused;
    Plan *pl = (Plan *)self;
    return Py_BuildValue("{sLsLsL}", "handled", (long long)pl->handled, "handed_back", (long long)pl->handed_back,
                         "with_gil", (long long)pl->with_gil);
}

static PyMethodDef Plan_methods[] = {
    {"map", Plan_map, METH_VARARGS, "map(messages, start, newest) -> (data, lines, next, handed, error)"},
    {"drain", Plan_drain, METH_VARARGS,
     "drain(socket_address, limit, newest[, max_bytes]) -> ((data, lines, taken, handed, error), errno)"},
    {"stage_zmq", Plan_stage_zmq, METH_VARARGS, "stage_zmq(socket_address, limit[, max_bytes]) -> (taken, errno)"},
    {"stage_frames", Plan_stage_frames, METH_VARARGS, "stage_frames(messages, start) -> count"},
    {"commit", Plan_commit, METH_VARARGS,
     "commit(newest, slow[, keep]) -> (data, lines, compiled); keep: (bytes kept in all, lines, compiled)"},
    {"take", Plan_take, METH_NOARGS, "take() -> bytes: the output the commits with keep left"},
    {"stats", Plan_stats, METH_NOARGS, "counts of messages handled and handed back"},
    {"received_bytes", Plan_received_bytes, METH_NOARGS, "(bytes, largest) of the last stage_zmq's messages"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Plan_slots[] = {
    {Py_tp_init, Plan_init},
    {Py_tp_dealloc, Plan_dealloc},
    {Py_tp_methods, Plan_methods},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_doc, "A subscription's compiled flat mapping (see fastpath.py)."},
    {0, NULL},
};

static PyType_Spec Plan_spec = {"station_bridge._fastpath.Plan", sizeof(Plan), 0, Py_TPFLAGS_DEFAULT, Plan_slots};

/* bind(init, recv, data, size, more, close, errno): libzmq's functions by address. */
static PyObject *bind(PyObject *module, PyObject *args) {
    (void)module;
    unsigned long long a[7];
    if (!PyArg_ParseTuple(args, "KKKKKKK", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6])) return NULL;
    for (int i = 0; i < 7; i++)
        if (!a[i]) { PyErr_SetString(PyExc_ValueError, "null function address"); return NULL; }
    zmq_api.init = (msg_init_f)(uintptr_t)a[0];
    zmq_api.recv = (msg_recv_f)(uintptr_t)a[1];
    zmq_api.data = (msg_data_f)(uintptr_t)a[2];
    zmq_api.size = (msg_size_f)(uintptr_t)a[3];
    zmq_api.more = (msg_more_f)(uintptr_t)a[4];
    zmq_api.close = (msg_close_f)(uintptr_t)a[5];
    zmq_api.err = (errno_f)(uintptr_t)a[6];
    Py_RETURN_NONE;
}

/* Test hooks: the exact time rule and repr, as this module computes them. */
static PyObject *float_ns(PyObject *module, PyObject *args) {
    (void)module;
    double v;
    long long unit;
    int rule;
    if (!PyArg_ParseTuple(args, "dLi", &v, &unit, &rule)) return NULL;
    int64_t ns;
    int rc = rule == R_EXACT ? float_exact_ns(v, unit, &ns) : float_product_ns(v, unit, &ns);
    if (rc < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(ns);
}

static PyObject *text_ns(PyObject *module, PyObject *args) {
    (void)module;
    const char *s;
    Py_ssize_t n;
    long long unit;
    if (!PyArg_ParseTuple(args, "s#L", &s, &n, &unit)) return NULL;
    int64_t ns;
    if (text_exact_ns(s, n, unit, &ns) < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(ns);
}

static PyObject *date_ns(PyObject *module, PyObject *args) {
    (void)module;
    const char *s;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "s#", &s, &n)) return NULL;
    int64_t ns;
    if (rfc3339_ns(s, n, &ns) < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(ns);
}

static PyObject *float_repr(PyObject *module, PyObject *arg) {
    (void)module;
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred()) return NULL;
    buf_t b = {NULL, 0, 0, 0};
    if (put_repr(&b, d, 0) < 0) { free(b.p); return NULL; }
    PyObject *r = PyUnicode_FromStringAndSize(b.p, b.len);
    free(b.p);
    return r;
}

static PyMethodDef module_methods[] = {
    {"float_repr", float_repr, METH_O, "float_repr(x) -> repr(x) as this module writes it"},
    {"bind", bind, METH_VARARGS, "bind(init, recv, data, size, more, close, errno): libzmq by address"},
    {"float_ns", float_ns, METH_VARARGS, "float_ns(value, unit, rule) -> ns or None"},
    {"date_ns", date_ns, METH_VARARGS, "date_ns(text) -> ns or None (the common RFC 3339 shape with an offset)"},
    {"text_ns", text_ns, METH_VARARGS, "text_ns(text, unit) -> ns or None (exact rule; unit 0: auto)"},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module) {
    if (!str_append && !(str_append = PyUnicode_InternFromString("append"))) return -1;
    if (!str_frombytes && !(str_frombytes = PyUnicode_InternFromString("frombytes"))) return -1;
    if (!c_locale && !(c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0))) { PyErr_NoMemory(); return -1; }
    PyObject *type = PyType_FromSpec(&Plan_spec);
    if (!type) return -1;
    if (PyModule_AddObject(module, "Plan", type) < 0) { Py_DECREF(type); return -1; }
    if (PyModule_AddIntConstant(module, "MSGPACK", F_MSGPACK) < 0 ||
        PyModule_AddIntConstant(module, "DELIMITED", F_DELIMITED) < 0 ||
        PyModule_AddIntConstant(module, "JSON", F_JSON) < 0 ||
        PyModule_AddIntConstant(module, "TEXT_JSON", F_TEXT_JSON) < 0 ||
        PyModule_AddIntConstant(module, "EXACT", R_EXACT) < 0 ||
        PyModule_AddIntConstant(module, "PRODUCT", R_PRODUCT) < 0 ||
        PyModule_AddIntConstant(module, "WINDOW", U_WINDOW) < 0 ||
        PyModule_AddIntConstant(module, "LAST", U_LAST) < 0 ||
        PyModule_AddIntConstant(module, "FLOAT", K_FLOAT) < 0 ||
        PyModule_AddIntConstant(module, "INTEGER", K_INTEGER) < 0 ||
        PyModule_AddIntConstant(module, "STRING", K_STRING) < 0 ||
        PyModule_AddIntConstant(module, "BOOLEAN", K_BOOLEAN) < 0 ||
        PyModule_AddIntConstant(module, "MSG_T_SIZE", (long)sizeof(zmsg_t)) < 0 ||
        PyModule_AddIntConstant(module, "INT_DIGITS_MAX", INT_DIGITS_MAX) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot module_slots[] = {{Py_mod_exec, module_exec}, {0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastpath", "The flat-record hot path in C (see fastpath.py).", 0, module_methods,
    module_slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) { return PyModuleDef_Init(&module_def); }

/* Unit tests of the client's transport and request layer (client/conn.c,
 * client/api.c, client/upload.c, the asking in client/cmd_ask.c) against a
 * scripted one-connection server in a child process: error answers become
 * the right codes, tokens are sent and token files checked, uploads carry
 * an exact tar of a directory, streamed answers are assembled, and TLS
 * verifies the server's certificate and name and presents a client
 * certificate.  The real daemon is tested in test_client_daemon.sh. */
#include "client/client.h"
#include "tests/check.h"

#include <archive.h>
#include <archive_entry.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[4096];

typedef struct fake_server {
    pid_t pid;
    char request_path[4200];
} fake_server;

/* Read a request head and its Content-Length body from the connection. */
static size_t read_request(int fd, SSL *tls, char *buf, size_t cap)
{
    size_t n = 0;
    long long want = -1;
    while (n < cap - 1) {
        int r =
            tls ? SSL_read(tls, buf + n, (int)(cap - 1 - n)) : (int)read(fd, buf + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        buf[n] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end && want < 0) {
            char *cl = strcasestr(buf, "\r\nContent-Length: ");
            want = (long long)(end + 4 - buf) + (cl && cl < end ? atoll(cl + 18) : 0);
        }
        if (want >= 0 && (long long)n >= want) break;
    }
    return n;
}

/* Serve one connection from `listener`: record the request, send `response`. */
static void serve_one(int listener, SSL_CTX *tls_ctx, const char *response, const char *record)
{
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) _exit(1);
    SSL *tls = NULL;
    if (tls_ctx) {
        tls = SSL_new(tls_ctx);
        SSL_set_fd(tls, fd);
        if (SSL_accept(tls) != 1) _exit(0); /* the client refused us, or we it */
    }
    static char buf[1 << 20];
    size_t n = read_request(fd, tls, buf, sizeof buf);
    FILE *f = fopen(record, "wb");
    if (f) {
        fwrite(buf, 1, n, f);
        fclose(f);
    }
    if (tls)
        SSL_write(tls, response, (int)strlen(response));
    else if (write(fd, response, strlen(response)) < 0)
        _exit(1);
    if (tls) SSL_shutdown(tls);
    close(fd);
    _exit(0);
}

static void fake_start(fake_server *f, int listener, SSL_CTX *tls_ctx, const char *response)
{
    static int serial;
    snprintf(f->request_path, sizeof f->request_path, "%s/request-%d", dir, serial++);
    unlink(f->request_path);
    fflush(NULL);
    f->pid = fork();
    REQUIRE(f->pid >= 0, "fork");
    if (f->pid == 0) serve_one(listener, tls_ctx, response, f->request_path);
}

/* Wait for the server and return what it received (malloc'd, "" if none). */
static char *fake_finish(fake_server *f)
{
    int status;
    waitpid(f->pid, &status, 0);
    char *text;
    size_t len;
    tome_error err = {0};
    if (tome_read_file(f->request_path, 1 << 20, &text, &len, &err) != 0) return strdup("");
    return text;
}

static int unix_listener(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(fd, 4) == 0,
            "cannot listen on %s", path);
    return fd;
}

static void client_for(tome_client *c, const char *socket_path)
{
    tome_options opt = {.socket_path = socket_path};
    tome_error err = {0};
    REQUIRE(tome_client_init(c, &opt, &err) == 0, "%s", err.msg);
}

static void test_json_answers(int listener, const char *socket_path)
{
    tome_client c;
    tome_error err = {0};
    json_t *reply;
    fake_server f = {0};
    setenv("TOME_TOKEN", "t0ken", 1);
    client_for(&c, socket_path);
    unsetenv("TOME_TOKEN");

    fake_start(&f, listener, NULL,
               "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n"
               "{\"corpora\": [\"a\"]}\r\n");
    CHECK_OK(tome_api_json(&c, "GET", "/v1/corpora", NULL, &reply, NULL, &err), &err);
    CHECK(json_array_size(json_object_get(reply, "corpora")) == 1);
    json_decref(reply);
    char *req = fake_finish(&f);
    CHECK(strncmp(req, "GET /v1/corpora HTTP/1.1\r\n", 26) == 0);
    CHECK(strstr(req, "\r\nAuthorization: Bearer t0ken\r\n") != NULL);
    free(req);

    static const struct {
        const char *response;
        int code;
        const char *message;
    } errors[] = {
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 72\r\n\r\n"
         "{\"error\": {\"code\": \"not_found\", \"message\": \"corpus 'x' does not exist\"}}",
         TOME_ENOTFOUND, "corpus 'x' does not exist"},
        {"HTTP/1.1 409 Conflict\r\nContent-Length: 49\r\n\r\n"
         "{\"error\": {\"code\": \"exists\", \"message\": \"taken\"}}",
         TOME_EEXIST, "taken"},
        {"HTTP/1.1 503 Unavailable\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n", TOME_EBUSY,
         "tomed answered HTTP 503 (retry after 3 s)"},
        {"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nnot json!", TOME_EPERM,
         "tomed answered HTTP 403"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{bad}", TOME_EFORMAT, "malformed JSON"},
    };
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
        fake_start(&f, listener, NULL, errors[i].response);
        json_t *body = json_pack("{s:s}", "name", "x");
        int rc = tome_api_json(&c, "POST", "/v1/corpora", body, &reply, NULL, &err);
        json_decref(body);
        CHECKF(rc == errors[i].code, "case %zu: rc=%d (%s)", i, rc, err.msg);
        CHECKF(strstr(err.msg, errors[i].message) != NULL, "case %zu: %s", i, err.msg);
        req = fake_finish(&f);
        CHECK(strstr(req, "\r\nContent-Type: application/json\r\n") != NULL);
        CHECK(strstr(req, "\r\n\r\n{\"name\":\"x\"}") != NULL);
        free(req);
    }
    tome_client_free(&c);
}

static void collect(void *ctx, const char *text)
{
    strcat(ctx, text);
}

static void test_streamed_answer(int listener, const char *socket_path)
{
    tome_client c;
    tome_error err = {0};
    fake_server f = {0};
    client_for(&c, socket_path);
    fake_start(&f, listener, NULL,
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
               "Transfer-Encoding: chunked\r\n\r\n"
               "d\r\n: keepalive\n\n\r\n"
               "26\r\nevent: token\ndata: {\"text\": \"Hello\"}\n\n\r\n"
               "27\r\nevent: token\ndata: {\"text\": \" world\"}\n\n\r\n"
               "50\r\nevent: done\ndata: {\"answer\": \"Hello world\", \"usage\": "
               "{\"completion_tokens\": 2}}\n\n\r\n0\r\n\r\n");
    tome_ask_params q = {
        .question = "Hi?", .max_tokens = 9, .thinking = "max", .has_seed = 1, .seed = 4};
    char text[256] = "";
    json_t *result;
    CHECK_OK(tome_ask(&c, "src", &q, collect, text, &result, &err), &err);
    CHECK(strcmp(text, "Hello world") == 0);
    CHECK(!strcmp(json_string_value(json_object_get(result, "answer")), "Hello world"));
    json_t *client = json_object_get(result, "client");
    CHECK(json_is_number(json_object_get(client, "ttft_ms")));
    CHECK(json_number_value(json_object_get(client, "total_ms")) >= 0);
    json_decref(result);
    char *req = fake_finish(&f);
    CHECK(strncmp(req, "POST /v1/corpora/src/ask HTTP/1.1\r\n", 35) == 0);
    CHECK(strstr(req, "\r\nAccept: text/event-stream\r\n") != NULL);
    json_t *body = json_loads(strstr(req, "\r\n\r\n") + 4, 0, NULL);
    CHECK(body && !strcmp(json_string_value(json_object_get(body, "question")), "Hi?"));
    CHECK(json_integer_value(json_object_get(body, "max_tokens")) == 9);
    CHECK(!strcmp(json_string_value(json_object_get(body, "thinking")), "max"));
    CHECK(json_integer_value(json_object_get(body, "seed")) == 4);
    CHECK(json_is_true(json_object_get(body, "stream")));
    CHECK(json_object_get(body, "temperature") == NULL);
    json_decref(body);
    free(req);

    fake_start(
        &f, listener, NULL,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
        "event: error\ndata: {\"error\": {\"code\": \"limit\", \"message\": \"too long\"}}\n\n");
    CHECK(tome_ask(&c, "src", &q, NULL, NULL, &result, &err) == TOME_ELIMIT);
    CHECK(strcmp(err.msg, "too long") == 0 && result == NULL);
    free(fake_finish(&f));

    fake_start(&f, listener, NULL,
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
               "event: token\ndata: {\"text\": \"cut\"}\n\n");
    CHECK(tome_ask(&c, "src", &q, NULL, NULL, &result, &err) == TOME_EUNREACHABLE);
    free(fake_finish(&f));

    fake_start(&f, listener, NULL,
               "HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: 58\r\n"
               "\r\n{\"error\": {\"code\": \"mismatch\", \"message\": \"no state yet\"}}");
    CHECK(tome_ask(&c, "src", &q, NULL, NULL, &result, &err) == TOME_EMISMATCH);
    CHECK(strcmp(err.msg, "no state yet") == 0);
    free(fake_finish(&f));
    tome_client_free(&c);
}

/* The names of the entries of the tar in `body`, as "a,b,c,". */
static void tar_names(const char *body, size_t len, char *names, size_t cap)
{
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    names[0] = '\0';
    REQUIRE(archive_read_open_memory(a, body, len) == ARCHIVE_OK, "not a tar");
    struct archive_entry *e;
    while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
        strncat(names, archive_entry_pathname(e), cap - strlen(names) - 2);
        strcat(names, ",");
    }
    archive_read_free(a);
}

static void write_text(const char *path, const char *text)
{
    tome_error err = {0};
    REQUIRE(tome_write_file_atomic(path, text, strlen(text), &err) == 0, "%s", err.msg);
}

static void test_upload(int listener, const char *socket_path)
{
    char tree[4200], path[4300];
    tome_error err = {0};
    snprintf(tree, sizeof tree, "%s/tree", dir);
    snprintf(path, sizeof path, "%s/.git/objects", tree);
    REQUIRE(tome_mkdir_p(path, 0755, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/sub", tree);
    REQUIRE(tome_mkdir_p(path, 0755, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/README", tree);
    write_text(path, "read me\n");
    snprintf(path, sizeof path, "%s/sub/a.c", tree);
    write_text(path, "int a;\n");
    snprintf(path, sizeof path, "%s/.git/HEAD", tree);
    write_text(path, "ref: x\n");

    int fd;
    long long len;
    CHECK_OK(tome_upload_open(tree, &fd, &len, &err), &err);
    CHECK(len > 0 && len % 512 == 0);
    tome_client c;
    client_for(&c, socket_path);
    fake_server f = {0};
    fake_start(&f, listener, NULL,
               "HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\n{\"corpus\": \"src\", \"added\": 2}");
    json_t *reply;
    CHECK_OK(tome_api_upload(&c, "/v1/corpora/src/ingest", fd, len, &reply, &err), &err);
    CHECK(json_integer_value(json_object_get(reply, "added")) == 2);
    json_decref(reply);
    close(fd);
    char *req = fake_finish(&f);
    char expected[64], names[512];
    snprintf(expected, sizeof expected, "\r\nContent-Length: %lld\r\n", len);
    CHECK(strstr(req, expected) != NULL);
    CHECK(strstr(req, "\r\nContent-Type: application/octet-stream\r\n") != NULL);
    char *body = strstr(req, "\r\n\r\n") + 4;
    tar_names(body, (size_t)len, names, sizeof names);
    CHECKF(strstr(names, "README,") && strstr(names, "sub/,") && strstr(names, "sub/a.c,"), "%s",
           names);
    CHECKF(strstr(names, ".git") == NULL, "%s", names);
    free(req);
    tome_client_free(&c);

    snprintf(path, sizeof path, "%s/README", tree);
    CHECK_OK(tome_upload_open(path, &fd, &len, &err), &err);
    CHECK(len == 8);
    close(fd);
    CHECK(tome_upload_open("/nonexistent/x", &fd, &len, &err) == TOME_EIO);
}

static void test_token_file_and_unreachable(void)
{
    char path[4200];
    tome_client c;
    tome_error err = {0};
    snprintf(path, sizeof path, "%s/token", dir);
    write_text(path, "s3cret\n");
    chmod(path, 0644);
    tome_options opt = {.socket_path = "/nonexistent.sock", .token_file = path};
    CHECK(tome_client_init(&c, &opt, &err) == TOME_EPERM);
    CHECK(strstr(err.msg, "chmod 600") != NULL);
    tome_client_free(&c);
    chmod(path, 0600);
    CHECK_OK(tome_client_init(&c, &opt, &err), &err);
    CHECK(c.token && strcmp(c.token, "s3cret") == 0);
    json_t *reply;
    CHECK(tome_api_json(&c, "GET", "/v1/health", NULL, &reply, NULL, &err) == TOME_EUNREACHABLE);
    CHECK(strstr(err.msg, "/nonexistent.sock") != NULL);
    tome_client_free(&c);
    tome_options both = {.socket_path = "/a", .host = "b:1"};
    CHECK(tome_client_init(&c, &both, &err) == TOME_EINVAL);
    tome_client_free(&c);
}

/* ---- TLS: a CA, a server certificate for "localhost", a client one ---- */

static void make_certificates(void)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "cd %s && printf 'subjectAltName=DNS:localhost\\n' > san.ext && "
             "for n in ca other-ca; do openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -keyout $n.key -out $n.pem -days 2 "
             "-subj /CN=$n 2>/dev/null || exit 1; done && "
             "for n in server client; do openssl req -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 -nodes -keyout $n.key -out $n.csr -subj /CN=$n "
             "2>/dev/null && openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key "
             "-CAcreateserial -out $n.pem -days 2 -extfile san.ext 2>/dev/null || exit 1; done",
             dir);
    REQUIRE(system(cmd) == 0, "openssl could not make test certificates (apt-get install openssl)");
}

static SSL_CTX *server_tls(int require_client_cert)
{
    char cert[4200], key[4200], ca[4200];
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    REQUIRE(ctx && SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM) == 1 &&
                SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1,
            "server TLS setup");
    if (require_client_cert) {
        SSL_CTX_load_verify_locations(ctx, ca, NULL);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return ctx;
}

static int tcp_listener(int *port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && listen(fd, 4) == 0 &&
                getsockname(fd, (struct sockaddr *)&addr, &len) == 0,
            "cannot listen on loopback");
    *port = ntohs(addr.sin_port);
    return fd;
}

/* One TLS request; returns the rc and leaves the message in `err`. */
static int tls_request(int listener, SSL_CTX *server, const char *host, const char *ca_name,
                       int with_client_cert, tome_error *err)
{
    char ca[4200], cert[4200], key[4200];
    snprintf(ca, sizeof ca, "%s/%s.pem", dir, ca_name);
    snprintf(cert, sizeof cert, "%s/client.pem", dir);
    snprintf(key, sizeof key, "%s/client.key", dir);
    tome_options opt = {.host = host, .cacert = ca};
    if (with_client_cert) {
        opt.cert = cert;
        opt.key = key;
    }
    tome_client c;
    REQUIRE(tome_client_init(&c, &opt, err) == 0, "%s", err->msg);
    fake_server f = {0};
    fake_start(&f, listener, server,
               "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"status\": \"ok\"}");
    json_t *reply = NULL;
    int rc = tome_api_json(&c, "GET", "/v1/health", NULL, &reply, NULL, err);
    if (rc == 0) CHECK(!strcmp(json_string_value(json_object_get(reply, "status")), "ok"));
    json_decref(reply);
    char *req = fake_finish(&f);
    if (rc == 0) CHECK(strstr(req, "\r\nHost: localhost:") != NULL);
    free(req);
    tome_client_free(&c);
    return rc;
}

static void test_tls(void)
{
    make_certificates();
    int port;
    int listener = tcp_listener(&port);
    char by_name[64], by_ip[64];
    snprintf(by_name, sizeof by_name, "localhost:%d", port);
    snprintf(by_ip, sizeof by_ip, "127.0.0.1:%d", port);
    tome_error err = {0};
    SSL_CTX *plain = server_tls(0), *mutual = server_tls(1);

    CHECK_OK(tls_request(listener, plain, by_name, "ca", 0, &err), &err);
    CHECK(tls_request(listener, plain, by_name, "other-ca", 0, &err) == TOME_EUNREACHABLE);
    CHECKF(strstr(err.msg, "certificate") != NULL, "%s", err.msg);
    /* The certificate names localhost, not 127.0.0.1. */
    CHECK(tls_request(listener, plain, by_ip, "ca", 0, &err) == TOME_EUNREACHABLE);
    CHECKF(strstr(err.msg, "mismatch") != NULL, "%s", err.msg);
    CHECK_OK(tls_request(listener, mutual, by_name, "ca", 1, &err), &err);
    CHECK(tls_request(listener, mutual, by_name, "ca", 0, &err) == TOME_EUNREACHABLE);
    SSL_CTX_free(plain);
    SSL_CTX_free(mutual);
    close(listener);
}

int main(void)
{
    snprintf(dir, sizeof dir, "%s", check_tmpdir());
    char socket_path[4200];
    snprintf(socket_path, sizeof socket_path, "%s/fake.sock", dir);
    int listener = unix_listener(socket_path);
    test_json_answers(listener, socket_path);
    test_streamed_answer(listener, socket_path);
    test_upload(listener, socket_path);
    test_token_file_and_unreachable();
    close(listener);
    test_tls();
    return check_finish();
}

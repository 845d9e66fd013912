/*
 * The libmilter C reference for scripts/bench-postfix: privacy-milter's two header rules,
 * written as a conventional libmilter milter is (the way the milters of the
 * OpenDKIM / dkim-milter class and libmilter's own sample are), for the CPU target of
 * docs/performance.md (privacy-milter's own CPU per message at most half of this milter's).
 *
 * Conventional means: no negotiate callback, so libmilter asks for its defaults (every stage,
 * each with a reply, the MTA's default macros); a thread per connection (libmilter's
 * model); per-connection data allocated at connect and freed at close; the headers looked at
 * one by one as they come.
 *
 * The rules, as privacy-milter applies them to the benchmark's mail (a trusted client, a
 * remote recipient):
 *   - rules.originating_ip: copies of X-Originating-IP the client sent are removed (one
 *     smfi_chgheader per copy) and "X-Originating-IP: [client address]" is added for a
 *     client in the trusted networks (here: loopback) or an authenticated one;
 *   - rules.transit_tag: "X-Transit: outbound" when the client is ours and a recipient is
 *     not in the local domains ("test.example" here), else "X-Transit: relay".
 *
 * Build: gcc -O2 -o reference-milter benches/reference-milter.c \
 *          "$(gcc -print-file-name=libmilter.a)" -lpthread
 * Run:   reference-milter unix:/path/to/sock | inet:PORT@127.0.0.1   (SIGTERM stops it)
 */
#include <libmilter/mfapi.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>

#define LOCAL_DOMAIN "test.example"

struct session {
    char client[INET6_ADDRSTRLEN];
    int trusted;       /* loopback, or authenticated */
    int remote_rcpt;   /* a recipient outside the local domain */
    int forged;        /* X-Originating-IP copies the client sent */
};

static struct session *session(SMFICTX *ctx) { return smfi_getpriv(ctx); }

static sfsistat on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr)
{
    struct session *s = calloc(1, sizeof *s);
    (void)host;
    if (s == NULL)
        return SMFIS_TEMPFAIL;
    if (addr != NULL && addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &in->sin_addr, s->client, sizeof s->client);
        s->trusted = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    } else if (addr != NULL && addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &in6->sin6_addr, s->client, sizeof s->client);
        s->trusted = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    smfi_setpriv(ctx, s);
    return SMFIS_CONTINUE;
}

static sfsistat on_mail(SMFICTX *ctx, char **argv)
{
    struct session *s = session(ctx);
    (void)argv;
    if (smfi_getsymval(ctx, "{auth_authen}") != NULL)
        s->trusted = 1;
    s->remote_rcpt = 0;
    s->forged = 0;
    return SMFIS_CONTINUE;
}

static sfsistat on_rcpt(SMFICTX *ctx, char **argv)
{
    struct session *s = session(ctx);
    const char *at = strrchr(argv[0], '@');
    if (at != NULL) {
        size_t n = strcspn(at + 1, ">");
        if (n != strlen(LOCAL_DOMAIN) || strncasecmp(at + 1, LOCAL_DOMAIN, n) != 0)
            s->remote_rcpt = 1;
    }
    return SMFIS_CONTINUE;
}

static sfsistat on_header(SMFICTX *ctx, char *name, char *value)
{
    (void)value;
    if (strcasecmp(name, "X-Originating-IP") == 0)
        session(ctx)->forged++;
    return SMFIS_CONTINUE;
}

static sfsistat on_eom(SMFICTX *ctx)
{
    struct session *s = session(ctx);
    char value[INET6_ADDRSTRLEN + 2];
    int i;
    /* Highest index first: each removal renumbers the copies after it. */
    for (i = s->forged; i >= 1; i--)
        smfi_chgheader(ctx, "X-Originating-IP", i, NULL);
    if (s->trusted && s->client[0] != '\0') {
        snprintf(value, sizeof value, "[%s]", s->client);
        smfi_addheader(ctx, "X-Originating-IP", value);
    }
    smfi_addheader(ctx, "X-Transit", s->trusted && s->remote_rcpt ? "outbound" : "relay");
    return SMFIS_CONTINUE;
}

static sfsistat on_close(SMFICTX *ctx)
{
    free(session(ctx));
    smfi_setpriv(ctx, NULL);
    return SMFIS_CONTINUE;
}

int main(int argc, char **argv)
{
    struct smfiDesc desc = {
        .xxfi_name = "reference-milter",
        .xxfi_version = SMFI_VERSION,
        .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS,
        .xxfi_connect = on_connect,
        .xxfi_envfrom = on_mail,
        .xxfi_envrcpt = on_rcpt,
        .xxfi_header = on_header,
        .xxfi_eom = on_eom,
        .xxfi_close = on_close,
    };
    if (argc != 2) {
        fprintf(stderr, "usage: %s unix:/path | inet:PORT@HOST\n", argv[0]);
        return 2;
    }
    /* The MTA's user must be able to connect to a unix socket. */
    umask(0);
    if (smfi_setconn(argv[1]) != MI_SUCCESS || smfi_register(desc) != MI_SUCCESS ||
        smfi_opensocket(1) != MI_SUCCESS) {
        fprintf(stderr, "reference-milter: cannot listen on %s\n", argv[1]);
        return 1;
    }
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}

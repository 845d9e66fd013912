/*
 * The cheapest milter with privacy-milter's negotiation, for scripts/bench-postfix.
 *
 * It asks the MTA for exactly what src/callbacks.rs asks for, and does nothing else but add
 * one header at end of message:
 *   - actions: ADD_HEADER | CHANGE_HEADER (only if both are offered), plus REQUEST_MACROS
 *     (SMFIF_SETSYMLIST) when offered;
 *   - protocol options: NO_HELO, NO_UNKNOWN, no reply for connect, mail, rcpt, data, header,
 *     end of headers and body, and rejected recipients too (RCPT_REJ), each only if offered;
 *   - the same macro list per stage;
 *   - the same callbacks (connect, mail, rcpt, data, header, eoh, body, eom, abort), each
 *     returning SMFIS_NOREPLY where the no-reply option for its stage was negotiated (as
 *     libmilter requires; anything else is logged as an error and replaced by no reply);
 *   - at end of message: X-Transit: relay, and continue.
 * A close callback only clears the per-connection data (libmilter warns if it is left set);
 * close is not a protocol stage and changes nothing on the wire.
 *
 * libmilter offers the no-reply options to the negotiate callback even where the MTA lacks
 * them (it fakes them); Postfix 3.x offers them all, so "only if offered" holds there.
 *
 * On TCP it does what src/listener/quickack.rs does, or it would measure the Nagle and
 * delayed-ACK stalls that Postfix's milter writes meet (about 100 messages per second, README's
 * "Sockets") instead of a milter: TCP_NODELAY on the listening socket, which Linux copies to
 * every accepted one, and TCP_QUICKACK re-armed after every read. libmilter gives no access
 * to its sockets, so it is linked statically with -Wl,--wrap=read: its reads go through
 * wrap_read below.
 *
 * Build: gcc -O2 -o minimal-milter benches/minimal-milter.c \
 *          "$(gcc -print-file-name=libmilter.a)" -lpthread -Wl,--wrap=read
 * Run:   minimal-milter unix:/path/to/sock | inet:PORT@127.0.0.1   (SIGTERM stops it)
 */
#include <libmilter/mfapi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define WANTED_OPTS                                                                        \
    (SMFIP_NOHELO | SMFIP_NOUNKNOWN | SMFIP_NR_CONN | SMFIP_NR_MAIL | SMFIP_NR_RCPT |       \
     SMFIP_NR_DATA | SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY | SMFIP_RCPT_REJ)

/* The connection's private data is a word, not a pointer: the negotiated protocol options,
 * CAN_EDIT when the header actions were granted, and TAG so that it is never NULL. */
#define TAG ((uintptr_t)1 << (sizeof(uintptr_t) * 8 - 1))
#define CAN_EDIT (TAG >> 1)

/* Listening on TCP: re-arm TCP_QUICKACK after every read of libmilter's. */
static int tcp;

ssize_t __real_read(int fd, void *buf, size_t len);
ssize_t __wrap_read(int fd, void *buf, size_t len)
{
    ssize_t n = __real_read(fd, buf, len);
    if (tcp && n > 0) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    }
    return n;
}

/* TCP_NODELAY on libmilter's listening socket (the only one open after smfi_opensocket). */
static int nodelay_on_listener(void)
{
    int fd, found = 0;
    for (fd = 3; fd < 1024; fd++) {
        int on = 0, one = 1;
        socklen_t len = sizeof on;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on &&
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0)
            found++;
    }
    return found == 1 ? 0 : -1;
}

static sfsistat reply(SMFICTX *ctx, unsigned long noreply_bit)
{
    uintptr_t opts = (uintptr_t)smfi_getpriv(ctx);
    return (opts & noreply_bit) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

static sfsistat on_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
                             unsigned long f2, unsigned long f3, unsigned long *pf0,
                             unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
    const unsigned long edit = SMFIF_ADDHDRS | SMFIF_CHGHDRS;
    (void)f2;
    (void)f3;
    *pf0 = ((f0 & edit) == edit ? edit : 0) | (f0 & SMFIF_SETSYMLIST);
    *pf1 = f1 & WANTED_OPTS;
    *pf2 = 0;
    *pf3 = 0;
    smfi_setsymlist(ctx, SMFIM_CONNECT, "j {daemon_name} {client_addr}");
    smfi_setsymlist(ctx, SMFIM_ENVFROM, "{auth_type} {auth_authen}");
    smfi_setsymlist(ctx, SMFIM_ENVRCPT, "{rcpt_mailer} {rcpt_addr}");
    smfi_setsymlist(ctx, SMFIM_DATA, "i");
    smfi_setsymlist(ctx, SMFIM_EOH, "i");
    smfi_setsymlist(ctx, SMFIM_EOM, "i");
    smfi_setpriv(ctx, (void *)(TAG | ((*pf0 & edit) == edit ? CAN_EDIT : 0) | *pf1));
    return SMFIS_CONTINUE;
}

static sfsistat on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr)
{
    (void)host;
    (void)addr;
    return reply(ctx, SMFIP_NR_CONN);
}

static sfsistat on_mail(SMFICTX *ctx, char **argv)
{
    (void)argv;
    return reply(ctx, SMFIP_NR_MAIL);
}

static sfsistat on_rcpt(SMFICTX *ctx, char **argv)
{
    (void)argv;
    return reply(ctx, SMFIP_NR_RCPT);
}

static sfsistat on_data(SMFICTX *ctx) { return reply(ctx, SMFIP_NR_DATA); }

static sfsistat on_header(SMFICTX *ctx, char *name, char *value)
{
    (void)name;
    (void)value;
    return reply(ctx, SMFIP_NR_HDR);
}

static sfsistat on_eoh(SMFICTX *ctx) { return reply(ctx, SMFIP_NR_EOH); }

static sfsistat on_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
    (void)chunk;
    (void)len;
    return reply(ctx, SMFIP_NR_BODY);
}

static sfsistat on_eom(SMFICTX *ctx)
{
    if ((uintptr_t)smfi_getpriv(ctx) & CAN_EDIT)
        smfi_addheader(ctx, "X-Transit", "relay");
    return SMFIS_CONTINUE;
}

static sfsistat on_abort(SMFICTX *ctx)
{
    (void)ctx;
    return SMFIS_CONTINUE;
}

static sfsistat on_close(SMFICTX *ctx)
{
    smfi_setpriv(ctx, NULL);
    return SMFIS_CONTINUE;
}

int main(int argc, char **argv)
{
    struct smfiDesc desc = {
        .xxfi_name = "minimal-milter",
        .xxfi_version = SMFI_VERSION,
        .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS,
        .xxfi_connect = on_connect,
        .xxfi_helo = NULL,
        .xxfi_envfrom = on_mail,
        .xxfi_envrcpt = on_rcpt,
        .xxfi_header = on_header,
        .xxfi_eoh = on_eoh,
        .xxfi_body = on_body,
        .xxfi_eom = on_eom,
        .xxfi_abort = on_abort,
        .xxfi_close = on_close,
        .xxfi_unknown = NULL,
        .xxfi_data = on_data,
        .xxfi_negotiate = on_negotiate,
    };
    if (argc != 2) {
        fprintf(stderr, "usage: %s unix:/path | inet:PORT@HOST\n", argv[0]);
        return 2;
    }
    /* The MTA's user must be able to connect to a unix socket. */
    umask(0);
    if (smfi_setconn(argv[1]) != MI_SUCCESS || smfi_register(desc) != MI_SUCCESS ||
        smfi_opensocket(1) != MI_SUCCESS) {
        fprintf(stderr, "minimal-milter: cannot listen on %s\n", argv[1]);
        return 1;
    }
    tcp = strncmp(argv[1], "inet", 4) == 0;
    if (tcp && nodelay_on_listener() != 0) {
        fprintf(stderr, "minimal-milter: cannot set TCP_NODELAY on the listening socket\n");
        return 1;
    }
    return smfi_main() == MI_SUCCESS ? 0 : 1;
}

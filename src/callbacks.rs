//! Thin adapters from indymilter's callbacks to the session: copy the arguments and the
//! macros we asked for, call the session, return its status. No decisions are made here.

use crate::session::{Macros, Negotiated, Session, Sessions};
use indymilter::{Actions, Callbacks, MacroStage, ProtoOpts, SocketInfo, Status};
use std::{collections::HashMap, ffi::CStr, sync::Arc};
use tracing::{debug, warn};

pub fn build(sessions: Arc<Sessions>) -> Callbacks<Session> {
    Callbacks::new()
        .on_negotiate(move |cx, mta_actions, mta_opts| {
            let sessions = Arc::clone(&sessions);
            Box::pin(async move {
                let (actions, opts, negotiated) = negotiate(mta_actions, mta_opts);
                cx.requested_actions = actions;
                cx.requested_opts = opts;
                // The lists are what SMFIF_SETSYMLIST agrees on: an MTA that did not offer it
                // (protocol versions 2 to 4 have none) expects a reply of three words, and
                // sends the macros of its own settings.
                if actions.contains(Actions::REQUEST_MACROS) {
                    cx.requested_macros = requested_macros();
                } else {
                    debug!(
                        "the MTA takes no macro list (it does not offer SMFIF_SETSYMLIST): \
                         it sends the macros its own settings name"
                    );
                }
                cx.data = Some(sessions.start(negotiated));
                Status::Continue
            })
        })
        .on_connect(|cx, _hostname, socket| {
            Box::pin(async move {
                let ip = match socket {
                    SocketInfo::Inet(addr) => Some(addr.ip()),
                    _ => None,
                };
                let macros = connect_macros(&cx.macros);
                with_session(&mut cx.data, |s| s.connect(ip, macros))
            })
        })
        .on_mail(|cx, args| {
            Box::pin(async move {
                let sender = first_arg(&args);
                let macros = mail_macros(&cx.macros);
                with_session(&mut cx.data, |s| s.mail(&sender, macros))
            })
        })
        .on_rcpt(|cx, args| {
            Box::pin(async move {
                let recipient = first_arg(&args);
                let macros = rcpt_macros(&cx.macros);
                with_session(&mut cx.data, |s| s.rcpt(&recipient, macros))
            })
        })
        .on_data(|cx| {
            Box::pin(async move {
                let id = macro_value(&cx.macros, c"i");
                with_session(&mut cx.data, |s| s.queue_id(id, ProtoOpts::NOREPLY_DATA))
            })
        })
        .on_header(|cx, name, value| {
            Box::pin(async move {
                with_session(&mut cx.data, |s| {
                    s.header(name.as_bytes(), value.as_bytes())
                })
            })
        })
        .on_eoh(|cx| {
            Box::pin(async move {
                let id = macro_value(&cx.macros, c"i");
                with_session(&mut cx.data, |s| s.queue_id(id, ProtoOpts::NOREPLY_EOH))
            })
        })
        .on_body(|cx, chunk| {
            Box::pin(async move { with_session(&mut cx.data, |s| s.body(chunk.len())) })
        })
        .on_eom(|cx| {
            Box::pin(async move {
                let id = macro_value(&cx.macros, c"i");
                match cx.data.as_mut() {
                    Some(session) => session.eom(id, &cx.actions).await,
                    None => Status::Continue,
                }
            })
        })
        .on_abort(|cx| {
            Box::pin(async move {
                with_session(&mut cx.data, |s| {
                    s.abort();
                    Status::Continue
                })
            })
        })
}

fn with_session(data: &mut Option<Session>, f: impl FnOnce(&mut Session) -> Status) -> Status {
    data.as_mut().map_or(Status::Continue, f)
}

fn first_arg(args: &[std::ffi::CString]) -> String {
    args.first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn macro_value(macros: &indymilter::Macros, name: &CStr) -> Option<String> {
    macros
        .get(name)
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.is_empty())
}

// Each stage copies only the macros the session reads at that stage (fewer allocations per
// message than copying them all at every stage).

fn connect_macros(m: &indymilter::Macros) -> Macros {
    Macros {
        host: macro_value(m, c"j"),
        daemon_name: macro_value(m, c"{daemon_name}"),
        client_addr: macro_value(m, c"{client_addr}"),
        ..Macros::default()
    }
}

fn mail_macros(m: &indymilter::Macros) -> Macros {
    Macros {
        queue_id: macro_value(m, c"i"),
        auth_type: macro_value(m, c"{auth_type}"),
        auth_authen: macro_value(m, c"{auth_authen}"),
        ..Macros::default()
    }
}

fn rcpt_macros(m: &indymilter::Macros) -> Macros {
    Macros {
        queue_id: macro_value(m, c"i"),
        rcpt_mailer: macro_value(m, c"{rcpt_mailer}"),
        rcpt_addr: macro_value(m, c"{rcpt_addr}"),
        ..Macros::default()
    }
}

/// The macros each stage needs, asked for at negotiation so the MTA needs no macro settings.
fn requested_macros() -> HashMap<MacroStage, std::ffi::CString> {
    [
        (MacroStage::Connect, c"j {daemon_name} {client_addr}"),
        (MacroStage::Mail, c"{auth_type} {auth_authen}"),
        (MacroStage::Rcpt, c"{rcpt_mailer} {rcpt_addr}"),
        (MacroStage::Data, c"i"),
        (MacroStage::Eoh, c"i"),
        (MacroStage::Eom, c"i"),
    ]
    .into_iter()
    .map(|(stage, names)| (stage, names.to_owned()))
    .collect()
}

/// The stages we skip, and those we never answer (fewer round trips per message).
const WANTED_OPTS: ProtoOpts = ProtoOpts::NO_HELO
    .union(ProtoOpts::NO_UNKNOWN)
    .union(ProtoOpts::NOREPLY_CONNECT)
    .union(ProtoOpts::NOREPLY_MAIL)
    .union(ProtoOpts::NOREPLY_RCPT)
    .union(ProtoOpts::NOREPLY_DATA)
    .union(ProtoOpts::NOREPLY_HEADER)
    .union(ProtoOpts::NOREPLY_EOH)
    .union(ProtoOpts::NOREPLY_BODY)
    .union(ProtoOpts::REJECTED_RCPT);

/// Chooses what to ask of the MTA from what it offers. Only offered options are requested,
/// so negotiation never fails; without the header actions the milter still records events.
pub fn negotiate(mta_actions: Actions, mta_opts: ProtoOpts) -> (Actions, ProtoOpts, Negotiated) {
    let needed = Actions::ADD_HEADER | Actions::CHANGE_HEADER;
    let can_edit = mta_actions.contains(needed);
    let mut actions = if can_edit { needed } else { Actions::empty() };
    if !can_edit {
        // Once per connection: the events of its messages say the same ("edits").
        let missing = [
            (Actions::ADD_HEADER, "SMFIF_ADDHDRS"),
            (Actions::CHANGE_HEADER, "SMFIF_CHGHDRS"),
        ]
        .into_iter()
        .filter(|(a, _)| !mta_actions.contains(*a))
        .map(|(_, name)| name)
        .collect::<Vec<_>>()
        .join(" and ");
        warn!(
            "the MTA does not allow header edits on this milter connection (it does not offer \
             {missing}): its messages pass without the headers the rules add or remove, and \
             their events say \"edits\": \"unavailable\""
        );
    }
    // Claimed only when offered, as the MTA must allow every action the milter claims;
    // Sendmail honours our macro lists only with this action claimed.
    actions |= mta_actions & Actions::REQUEST_MACROS;
    let opts = WANTED_OPTS & mta_opts;
    let noreply = opts
        & (ProtoOpts::NOREPLY_CONNECT
            | ProtoOpts::NOREPLY_MAIL
            | ProtoOpts::NOREPLY_RCPT
            | ProtoOpts::NOREPLY_DATA
            | ProtoOpts::NOREPLY_HEADER
            | ProtoOpts::NOREPLY_EOH
            | ProtoOpts::NOREPLY_BODY);
    (actions, opts, Negotiated { noreply, can_edit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_only_for_what_is_offered() {
        let (actions, opts, n) = negotiate(Actions::all(), ProtoOpts::all());
        assert_eq!(
            actions,
            Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::REQUEST_MACROS
        );
        assert_eq!(opts, WANTED_OPTS);
        assert!(n.can_edit && n.noreply.contains(ProtoOpts::NOREPLY_BODY));

        let (actions, opts, n) = negotiate(Actions::ADD_HEADER, ProtoOpts::NO_HELO);
        // Neither the header actions nor the macro feature (and so no macro list).
        assert_eq!(actions, Actions::empty());
        assert_eq!(opts, ProtoOpts::NO_HELO);
        assert!(!n.can_edit && n.noreply.is_empty());
    }
}

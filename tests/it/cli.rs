//! The command line's documentation against its definition (`privacy_milter::cli`, walked
//! through clap's own tree): privacy-milter(8) has an entry under COMMANDS for every command,
//! named by its path (`ledger query`), that names each of its flags and format values, and an
//! entry under OPTIONS for every flag of the program; the README's "Command line" names each
//! command and flag. A command, flag or value added to the code and forgotten there fails here.
use clap::CommandFactory;
use privacy_milter::cli::Cli;

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// A command of the tree with everything it must document.
struct Leaf {
    /// `ledger query`.
    path: String,
    /// Its own flags (`--format`), with the short ones (`-c`).
    flags: Vec<String>,
    /// Its positional arguments' names (`token`) and the values a flag takes (`json`).
    words: Vec<String>,
}

/// The flags and words of one command's own arguments (not the global ones of its parents).
fn arguments(command: &clap::Command) -> (Vec<String>, Vec<String>) {
    let (mut flags, mut words) = (Vec::new(), Vec::new());
    for arg in command.get_arguments().filter(|a| !a.is_global_set()) {
        flags.extend(arg.get_long().map(|l| format!("--{l}")));
        flags.extend(arg.get_short().map(|s| format!("-{s}")));
        if arg.is_positional() {
            words.push(arg.get_id().to_string());
        }
        // (A switch's possible values are true and false: nothing to document.)
        if arg.get_action().takes_values() {
            words.extend(
                arg.get_possible_values()
                    .iter()
                    .map(|v| v.get_name().to_string()),
            );
        }
    }
    (flags, words)
}

/// Every command that runs something (those with subcommands only group them), depth first.
fn leaves(command: &clap::Command, prefix: &str, out: &mut Vec<Leaf>) {
    for sub in command.get_subcommands() {
        let path = format!("{prefix}{}", sub.get_name()).trim().to_string();
        if sub.has_subcommands() {
            leaves(sub, &format!("{path} "), out);
        } else {
            let (flags, words) = arguments(sub);
            out.push(Leaf { path, flags, words });
        }
    }
}

/// The program's own flags: those given before any command, and the global ones.
fn program_flags(cli: &clap::Command) -> Vec<String> {
    arguments(cli)
        .0
        .into_iter()
        .chain(
            cli.get_arguments()
                .filter(|a| a.is_global_set())
                .flat_map(|a| a.get_long().map(|l| format!("--{l}"))),
        )
        .collect()
}

/// Where `word` first stands on its own in `text` (`--state`, not `--states` or `--state-x`;
/// `json`, not `jsonl`).
fn find(text: &str, word: &str) -> Option<usize> {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

fn has(text: &str, word: &str) -> bool {
    find(text, word).is_some()
}

/// A roff line as it reads: the request's arguments (unquoted; run together for the
/// alternating-font requests such as `.BR`), `\-` a hyphen, no font escapes.
fn plain(line: &str) -> String {
    let text = match line.strip_prefix('.') {
        None => line.to_string(),
        Some(request) => {
            let (name, rest) = request.split_once(' ').unwrap_or((request, ""));
            let mut args = Vec::new();
            let mut rest = rest.trim_start();
            while !rest.is_empty() {
                let (arg, tail) = match rest.strip_prefix('"') {
                    Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
                    None => rest.split_once(' ').unwrap_or((rest, "")),
                };
                args.push(arg);
                rest = tail.trim_start();
            }
            let alternating = name.len() == 2 && name.chars().all(|c| "BIR".contains(c));
            args.join(if alternating { "" } else { " " })
        }
    };
    ["\\fB", "\\fI", "\\fR", "\\fP", "\\&"]
        .iter()
        .fold(text.replace("\\-", "-"), |t, escape| t.replace(escape, ""))
}

/// The entries (`.TP`: its tag line, then its text) of a section of the man page.
fn entries(page: &str, section: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = page
        .lines()
        .skip_while(|l| *l != format!(".SH {section}"))
        .skip(1)
        .take_while(|l| !l.starts_with(".SH "))
        .collect();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut in_entry = false;
    for (i, line) in lines.iter().enumerate() {
        if *line == ".TP" {
            let tag = lines.get(i + 1).map(|l| plain(l)).unwrap_or_default();
            out.push((tag, String::new()));
            in_entry = true;
        } else if line.starts_with(".PP") {
            in_entry = false;
        } else if in_entry {
            let text = &mut out.last_mut().expect("an entry").1;
            text.push_str(&plain(line));
            text.push('\n');
        }
    }
    out
}

/// What the man page leaves out, in words.
fn undocumented_in_man_page(cli: &clap::Command, page: &str) -> Vec<String> {
    let mut leaves_found = Vec::new();
    leaves(cli, "", &mut leaves_found);
    assert!(leaves_found.len() >= 10, "the walk finds the commands");
    let commands = entries(page, "COMMANDS");
    let options = entries(page, "OPTIONS");
    let mut missing = Vec::new();
    for leaf in &leaves_found {
        let entry = commands.iter().find(|(tag, _)| {
            tag.strip_prefix(&leaf.path).is_some_and(|rest| {
                !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            })
        });
        let Some((_, text)) = entry else {
            missing.push(format!("COMMANDS has no entry for {:?}", leaf.path));
            continue;
        };
        for word in leaf.flags.iter().chain(&leaf.words) {
            if !has(text, word) {
                missing.push(format!(
                    "the entry for {:?} does not name {word}",
                    leaf.path
                ));
            }
        }
    }
    for flag in program_flags(cli) {
        if !options.iter().any(|(tag, _)| has(tag, &flag)) {
            missing.push(format!("OPTIONS has no entry for {flag}"));
        }
    }
    missing
}

#[test]
fn the_man_page_documents_every_command_and_flag() {
    let missing = undocumented_in_man_page(&Cli::command(), &read("packaging/privacy-milter.8"));
    assert!(
        missing.is_empty(),
        "privacy-milter(8):\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_command_flag_or_value_the_man_page_lacks_is_found() {
    use clap::{Arg, ArgAction, Command};
    let page = read("packaging/privacy-milter.8");
    // Added to the code and not to the page.
    let added = [
        (
            Cli::command().subcommand(Command::new("rotate-keys")),
            "COMMANDS has no entry for \"rotate-keys\"",
        ),
        (
            Cli::command().mut_subcommand("ledger", |l| l.subcommand(Command::new("vacuum"))),
            "COMMANDS has no entry for \"ledger vacuum\"",
        ),
        (
            Cli::command().mut_subcommand("track", |t| {
                t.arg(Arg::new("follow").long("follow").action(ArgAction::SetTrue))
            }),
            "the entry for \"track\" does not name --follow",
        ),
        (
            Cli::command().mut_subcommand("ip", |ip| {
                ip.mut_subcommand("decrypt", |d| d.arg(Arg::new("key").long("key")))
            }),
            "the entry for \"ip decrypt\" does not name --key",
        ),
        (
            Cli::command().arg(Arg::new("quiet").long("quiet").short('q').global(true)),
            "OPTIONS has no entry for --quiet",
        ),
        (
            Cli::command().mut_subcommand("audit", |a| {
                a.mut_arg("format", |f| f.value_parser(["text", "json", "yaml"]))
            }),
            "the entry for \"audit\" does not name yaml",
        ),
    ];
    for (cli, expected) in added {
        let missing = undocumented_in_man_page(&cli, &page);
        assert!(
            missing.iter().any(|m| m.contains(expected)),
            "{expected}: {missing:?}"
        );
    }
    // Taken out of the page (everywhere) while the code keeps it.
    for (cut, expected) in [
        (
            ".BR track \" [\" \\-\\-once ]",
            "COMMANDS has no entry for \"track\"",
        ),
        (
            ".BI \"ip decrypt \" token",
            "COMMANDS has no entry for \"ip decrypt\"",
        ),
        (
            "\\-\\-since",
            "the entry for \"ledger export\" does not name --since",
        ),
        ("csv", "the entry for \"ledger export\" does not name csv"),
        ("\\-\\-dry\\-run", "OPTIONS has no entry for --dry-run"),
        (".BR \\-c \", \"", "OPTIONS has no entry for -c"),
    ] {
        assert!(page.contains(cut), "the page has {cut:?}");
        let missing = undocumented_in_man_page(&Cli::command(), &page.replace(cut, ""));
        assert!(
            missing.iter().any(|m| m.contains(expected)),
            "without {cut:?}: {missing:?}"
        );
    }
}

#[test]
fn the_readme_names_every_command_and_flag() {
    let readme = read("README.md");
    let section: String = readme
        .lines()
        .skip_while(|l| *l != "## Command line")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect::<Vec<_>>()
        .join("\n");
    let mut leaves_found = Vec::new();
    leaves(&Cli::command(), "", &mut leaves_found);
    let mut missing = Vec::new();
    for leaf in &leaves_found {
        // `ledger stats | purge` names both: the path's words in order on one line.
        let words: Vec<&str> = leaf.path.split(' ').collect();
        let named = section.lines().any(|line| {
            let mut rest = line;
            words.iter().all(|w| {
                find(rest, w)
                    .map(|at| rest = &rest[at + w.len()..])
                    .is_some()
            })
        });
        if !named {
            missing.push(leaf.path.clone());
        }
        missing.extend(
            leaf.flags
                .iter()
                .filter(|f| f.starts_with("--") && !has(&section, f))
                .cloned(),
        );
    }
    // A summary: the long flags, not their short forms.
    missing.extend(
        program_flags(&Cli::command())
            .into_iter()
            .filter(|f| f.starts_with("--") && !has(&section, f)),
    );
    assert!(
        missing.is_empty(),
        "README.md, Command line, does not name: {missing:?}"
    );
}

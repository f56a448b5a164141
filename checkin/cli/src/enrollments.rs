//! `magicpush enrollments`: a running server's enrollment invitations (`GET /v1/enrollments`);
//! `enrollments create [--topic T] [--uses N] [--expires-in D] [--note N]` makes one and
//! prints the URL to open on the device (`POST /v1/enrollments`); `enrollments withdraw ID`
//! withdraws one (`DELETE /v1/enrollments/{id}`).

use std::process::ExitCode;

use http::Method;

use super::devices::{encode, table};
use super::remote::{cell, runtime, RemoteArgs};

/// Lists the invitations, creates or withdraws one.
#[derive(Debug, clap::Args)]
pub(crate) struct EnrollmentsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print the raw JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: Option<EnrollmentsAction>,
}

#[derive(Debug, clap::Subcommand)]
enum EnrollmentsAction {
    /// Create an invitation and print its URL: open it on the device (Safari) and install
    /// the profile.
    Create(CreateArgs),
    /// Withdraw an invitation: its URL answers 410 and its profiles' challenges are refused.
    Withdraw(WithdrawArgs),
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// The tenant (push topic) the profile names; needed when the server has several.
    #[arg(long)]
    topic: Option<String>,
    /// How many devices may enroll through it.
    #[arg(long, default_value_t = 1)]
    uses: u32,
    /// How long the URL hands out profiles (1m to 30d).
    #[arg(long, default_value = "24h")]
    expires_in: String,
    /// A note for the list (whose device it is, …).
    #[arg(long)]
    note: Option<String>,
}

#[derive(Debug, clap::Args)]
struct WithdrawArgs {
    /// The invitation's id (as `enrollments` lists it).
    id: String,
}

pub(crate) fn run(args: EnrollmentsArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let rt = runtime()?;
    let shown = match args.action {
        Some(EnrollmentsAction::Create(create)) => {
            let mut body = serde_json::json!({
                "uses": create.uses,
                "expires_in": create.expires_in,
            });
            if let Some(topic) = create.topic {
                body["topic"] = topic.into();
            }
            if let Some(note) = create.note {
                body["note"] = note.into();
            }
            let made = rt.block_on(client.send_json(Method::POST, "/v1/enrollments", &body))?;
            if !args.json {
                println!("{}", cell(made.get("url")));
                eprintln!(
                    "open this URL on the device (Safari) and install the profile: {} device(s) may enroll until {}",
                    cell(made.get("uses_left")),
                    cell(made.get("expires_at"))
                );
            }
            made
        }
        Some(EnrollmentsAction::Withdraw(withdraw)) => {
            let path = format!("/v1/enrollments/{}", encode(&withdraw.id));
            let answer = rt.block_on(client.call(Method::DELETE, &path, None))?;
            let view: serde_json::Value = serde_json::from_slice(&answer)?;
            if !args.json {
                println!(
                    "invitation {} withdrawn ({} device(s) enrolled through it)",
                    withdraw.id,
                    cell(view.get("enrolled"))
                );
            }
            view
        }
        None => {
            let list = rt.block_on(client.get_json("/v1/enrollments"))?;
            if !args.json {
                print!("{}", render(&list));
            }
            list
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    }
    Ok(ExitCode::SUCCESS)
}

const HEADERS: [&str; 8] = [
    "ID",
    "STATE",
    "TOPIC",
    "USES LEFT",
    "ENROLLED",
    "EXPIRES",
    "NOTE",
    "URL",
];

/// The invitations as a table.
fn render(list: &serde_json::Value) -> String {
    let rows: Vec<Vec<String>> = list["enrollments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            vec![
                cell(i.get("id")),
                cell(i.get("state")),
                cell(i.get("topic")),
                format!("{}/{}", cell(i.get("uses_left")), cell(i.get("uses"))),
                cell(i.get("enrolled")),
                cell(i.get("expires_at")),
                cell(i.get("note")),
                cell(i.get("url")),
            ]
        })
        .collect();
    let mut out = table(HEADERS.to_vec(), &rows);
    out.push_str(&format!("{} invitation(s)\n", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_each_invitation() {
        let list = serde_json::json!({"enrollments": [{
            "id": "3f9c", "state": "open", "topic": "com.apple.mgmt.External.a",
            "uses": 2, "uses_left": 1, "enrolled": 1, "expires_at": "2026-12-08T00:00:00Z",
            "note": "sales", "url": "https://mdm.example.com/enroll/3f9c", "devices": []
        }]});
        let text = render(&list);
        assert!(text.starts_with("ID"), "{text}");
        assert!(text.contains("3f9c  open"), "{text}");
        assert!(text.contains("1/2"), "{text}");
        assert!(text.contains("1 invitation(s)"), "{text}");
    }
}

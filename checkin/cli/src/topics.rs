//! `magicpush topics`: a running server's tenants (one per push certificate topic) with their
//! certificate and device counts; `topics add CERT [--key KEY]` adds one (`POST /v1/topics`)
//! and `topics set TOPIC [--name N] [--apple-id A]` names one (`PUT /v1/topics/{topic}`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use http::Method;

use super::devices::{encode, table};
use super::remote::{cell, runtime, RemoteArgs};

/// Lists the tenants, adds or names one.
#[derive(Debug, clap::Args)]
pub(crate) struct TopicsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Option<TopicsAction>,
}

#[derive(Debug, clap::Subcommand)]
enum TopicsAction {
    /// Add a tenant: a new customer's push certificate (Apple's .pem alone, matched to a
    /// request issued by the server, or with --key). A renewal is `PUT /v1/pushcert?topic=`.
    Add(AddArgs),
    /// Set a tenant's display name and/or Apple ID memo ("" clears).
    Set(SetArgs),
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// Apple's certificate (PEM or DER), or PEM certificate followed by its key.
    cert: PathBuf,
    /// Its private key (PEM), when not in the certificate's file.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The tenant's display name.
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, clap::Args)]
struct SetArgs {
    /// The tenant's push topic.
    topic: String,
    /// Display name.
    #[arg(long, required_unless_present = "apple_id")]
    name: Option<String>,
    /// The Apple ID that renews its certificate (the seed's memo).
    #[arg(long)]
    apple_id: Option<String>,
}

pub(crate) fn run(args: TopicsArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let rt = runtime()?;
    match args.action {
        Some(TopicsAction::Add(add)) => {
            let mut body = std::fs::read(&add.cert)
                .with_context(|| format!("cannot read {}", add.cert.display()))?;
            if let Some(key) = &add.key {
                if !body.trim_ascii_start().starts_with(b"-----BEGIN ") {
                    anyhow::bail!(
                        "{} is not PEM: with --key, give the certificate as PEM (openssl x509 -inform DER -in CERT -out CERT.pem)",
                        add.cert.display()
                    );
                }
                body.push(b'\n');
                body.extend(
                    std::fs::read(key)
                        .with_context(|| format!("cannot read --key {}", key.display()))?,
                );
            }
            let added = rt.block_on(client.call(
                Method::POST,
                "/v1/topics",
                Some(("application/x-pem-file", body.into())),
            ))?;
            let added: serde_json::Value = serde_json::from_slice(&added)?;
            let topic = added["topic"].as_str().unwrap_or_default().to_owned();
            if let Some(name) = add.name {
                let path = format!("/v1/topics/{}", encode(&topic));
                let body = serde_json::json!({ "name": name });
                rt.block_on(client.send_json(Method::PUT, &path, &body))?;
            }
            println!(
                "tenant {topic} added: {} (expires {}, {} day(s) left)",
                cell(added.get("subject")),
                cell(added.get("not_after")),
                cell(added.get("days_left"))
            );
        }
        Some(TopicsAction::Set(set)) => {
            let mut body = serde_json::Map::new();
            if let Some(name) = set.name {
                body.insert("name".into(), name.into());
            }
            if let Some(apple_id) = set.apple_id {
                body.insert("apple_id".into(), apple_id.into());
            }
            let path = format!("/v1/topics/{}", encode(&set.topic));
            let view = rt.block_on(client.send_json(Method::PUT, &path, &body.into()))?;
            println!(
                "tenant {}: name {}, Apple ID {}",
                set.topic,
                cell(view.get("name")),
                cell(view.get("apple_id"))
            );
        }
        None => {
            let list = rt.block_on(client.get_json("/v1/topics"))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", render(&list));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

const HEADERS: [&str; 8] = [
    "TOPIC",
    "NAME",
    "APPLE ID",
    "EXPIRES",
    "DAYS",
    "STATE",
    "DEVICES",
    "RESPONDED",
];

/// The tenant list as a table, with the devices of no tenant after it.
fn render(list: &serde_json::Value) -> String {
    let rows: Vec<Vec<String>> = list["topics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let cert = &t["certificate"];
            vec![
                cell(t.get("topic")),
                cell(t.get("name")),
                cell(t.get("apple_id")),
                cell(cert.get("not_after")),
                cell(cert.get("days_left")),
                cell(cert.get("state")),
                cell(t["devices"].get("total")),
                cell(t["devices"]["states"].get("responded")),
            ]
        })
        .collect();
    let mut out = table(HEADERS.to_vec(), &rows);
    out.push_str(&format!("{} tenant(s)\n", rows.len()));
    let unassigned = list["unassigned"]["total"].as_u64().unwrap_or(0);
    if unassigned > 0 {
        out.push_str(&format!(
            "{unassigned} device(s) enrolled with a topic no tenant has: they are refused at check-in (magicpush devices --topic TOPIC)\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_tenants_and_counts_the_unassigned() {
        let list = serde_json::json!({
            "topics": [{
                "topic": "com.apple.mgmt.External.a",
                "name": "Acme",
                "apple_id": null,
                "certificate": {"not_after": "2027-03-13T00:00:00Z", "days_left": 97, "state": "valid"},
                "devices": {"total": 3, "states": {"responded": 2, "pending": 1}}
            }],
            "unassigned": {"total": 2, "states": {}}
        });
        let text = render(&list);
        assert!(text.starts_with("TOPIC"), "{text}");
        assert!(text.contains("com.apple.mgmt.External.a  Acme"), "{text}");
        assert!(text.contains("1 tenant(s)"), "{text}");
        assert!(
            text.contains("2 device(s) enrolled with a topic no tenant has"),
            "{text}"
        );
    }
}

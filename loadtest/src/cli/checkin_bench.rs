//! `magicpush-loadtest checkin-bench`: durable check-ins per second, beside the same server on
//! the in-memory store and a bare HTTP server answering 200.

use std::process::ExitCode;

use crate::bench::checkin::{self, BenchDeviceAuth, CheckinBenchOptions, IdentityKey};

#[derive(Debug, clap::Args)]
pub struct CheckinBenchArgs {
    /// Simulated devices (each sends Authenticate and TokenUpdate).
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How the devices authenticate: `signature` (each signs every check-in with its own
    /// identity; the server verifies) or `none`.
    #[arg(long, value_enum, default_value = "signature")]
    device_auth: BenchDeviceAuth,
    /// Also run the servers with the other --device-auth, side by side in this run.
    #[arg(long)]
    compare_device_auth: bool,
    /// The devices' identity key: `p256` (a key each) or `rsa2048` (one shared key, a
    /// certificate each: the server's work is the same).
    #[arg(long, value_enum, default_value = "p256")]
    identity_key: IdentityKey,
    /// Also run the server on PostgreSQL at this URL (in a schema of its own, dropped after),
    /// beside SQLite: `postgres://user@127.0.0.1:5432/db`. The bench connects without TLS.
    #[arg(long, env = "MAGICPUSH_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Print one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CheckinBenchArgs) -> anyhow::Result<ExitCode> {
    let r = checkin::run(&CheckinBenchOptions {
        devices: args.devices.max(1),
        concurrency: args.concurrency.max(1),
        device_auth: args.device_auth,
        compare_device_auth: args.compare_device_auth,
        identity_key: args.identity_key,
        database_url: args.database_url,
    })?;
    println!(
        "{} devices, {} check-ins each mode, {} connections, device auth {:?} ({:?} identities)",
        r.devices, r.durable.checkins, r.concurrency, r.device_auth, r.identity_key
    );
    let mut modes: Vec<(&checkin::ModeResult, BenchDeviceAuth)> = vec![
        (&r.trivial, r.device_auth),
        (&r.memory, r.device_auth),
        (&r.durable, r.device_auth),
    ];
    modes.extend(r.postgres.iter().map(|m| (m, r.device_auth)));
    if let Some(o) = &r.other_device_auth {
        modes.extend([(&o.memory, o.device_auth), (&o.durable, o.device_auth)]);
        modes.extend(o.postgres.iter().map(|m| (m, o.device_auth)));
    }
    for (m, auth) in modes {
        print!("  {:<8} {:<9}", m.mode, format!("{auth:?}").to_lowercase());
        print!(
            " {:>9.0} check-ins/s  ({:.2} s)",
            m.checkins_per_s, m.elapsed_s
        );
        match m.writes_per_commit {
            Some(w) => println!("  {w:.1} writes per commit"),
            None => println!(),
        }
    }
    println!(
        "durable / trivial 200 = {:.3}   durable / in-memory = {:.3}",
        r.ratio_durable_vs_trivial, r.ratio_durable_vs_memory
    );
    if let Some(ratio) = r.ratio_postgres_vs_sqlite {
        print!("PostgreSQL / SQLite = {ratio:.3}");
        match r
            .other_device_auth
            .as_ref()
            .and_then(|o| o.ratio_postgres_vs_sqlite)
        {
            Some(other) => println!("   (other device auth: {other:.3})"),
            None => println!(),
        }
    }
    if let Some(o) = &r.other_device_auth {
        println!(
            "signature / none: durable = {:.3}   in-memory = {:.3}",
            o.durable_signature_over_none, o.memory_signature_over_none
        );
    }
    if let (Some(floor), Some(ratios)) = (&r.trivial_verifying, &r.signed_vs_trivial_verifying) {
        println!(
            "  {:<8} {:<9} {:>9.0} check-ins/s  ({:.2} s)  the floor of the signed runs",
            floor.mode, "signature", floor.checkins_per_s, floor.elapsed_s
        );
        println!(
            "signed / trivial+verify: durable = {:.3}   in-memory = {:.3}",
            ratios.durable, ratios.memory
        );
    }
    if let Some(us) = r.verify_us_per_checkin {
        println!("one verification (steady device): {us:.1} µs");
    }
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(ExitCode::SUCCESS)
}

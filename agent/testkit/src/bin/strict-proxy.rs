//! The strict proxy as a program, for the benchmarks: in front of a local
//! Azurite, enforcing Azure's limits (`diskferry_testkit::proxy::Strict`).
//!
//! `strict-proxy TARGET_PORT STATS_FILE [BLOB_MIB_PER_SEC [BLOB_REQUESTS_PER_SEC]]`
//! prints its port, then serves until killed, rewriting STATS_FILE (JSON:
//! requests, busy, refused, page_writes, page_writes_busy) twice a second.

use diskferry_testkit::proxy::{Proxy, Strict};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: strict-proxy TARGET_PORT STATS_FILE [BLOB_MIB_PER_SEC [BLOB_REQUESTS_PER_SEC]]");
        std::process::exit(2);
    }
    let num = |i: usize, default: u64| args.get(i).map_or(default, |v| v.parse().expect("a number"));
    let target: u16 = args[1].parse().expect("a port");
    let strict =
        Strict { blob_bytes_per_sec: num(3, 60) << 20, blob_requests_per_sec: num(4, 500), ..Strict::default() };
    let proxy = Proxy::strict(target, strict);
    println!("{}", proxy.port);
    loop {
        let (pages, pages_busy) = proxy.page_writes();
        let stats = format!(
            "{{\"requests\": {}, \"busy\": {}, \"refused\": {}, \"page_writes\": {pages}, \"page_writes_busy\": {pages_busy}}}\n",
            proxy.requests(),
            proxy.busy(),
            proxy.strict_refused()
        );
        let tmp = format!("{}.tmp", args[2]);
        if std::fs::write(&tmp, stats).is_ok() {
            let _ = std::fs::rename(&tmp, &args[2]);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

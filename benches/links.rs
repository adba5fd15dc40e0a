//! Share-link verification throughput: the gateway verifies on every link page and socket,
//! so the target is >= 500,000 verifications/s on one core.

use std::hint::black_box;
use std::time::{Duration as StdDuration, Instant};

use cmdop::ids::{LinkId, MachineId};
use cmdop::link_token::{KeyRing, LinkClaims, LinkMode, Revocations, verify_link};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use time::{Duration, OffsetDateTime};

fn setup() -> (KeyRing, String, OffsetDateTime) {
    let ring = match KeyRing::generate() {
        Ok(ring) => ring,
        Err(e) => panic!("no key ring: {e}"),
    };
    let now = OffsetDateTime::now_utc();
    let claims = LinkClaims {
        link_id: LinkId::random(),
        machine_id: MachineId::random(),
        deadline: now + Duration::hours(24),
        mode: LinkMode::ReadWrite,
    };
    let token = ring.mint(&claims);
    (ring, token, now)
}

fn bench_verify(c: &mut Criterion) {
    let (ring, token, now) = setup();
    let revocations = Revocations::new();
    for i in 0..1_000 {
        revocations.revoke(LinkId::random(), now + Duration::seconds(i));
    }
    assert!(ring.verify(&token, now).is_ok(), "bench token must verify");

    let mut group = c.benchmark_group("links");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify", |b| b.iter(|| ring.verify(black_box(&token), now)));
    group.bench_function("verify_link", |b| b.iter(|| verify_link(&ring, &revocations, black_box(&token), now)));
    group.finish();

    // A plain timed loop as well, so the figure reads directly as verifications/s.
    let run = StdDuration::from_secs(1);
    let (start, mut count) = (Instant::now(), 0u64);
    while start.elapsed() < run {
        for _ in 0..1_000 {
            black_box(ring.verify(black_box(&token), now).is_ok());
        }
        count += 1_000;
    }
    let per_second = count as f64 / start.elapsed().as_secs_f64();
    println!("links/verify: {per_second:.0} verifications/s on one core");
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);

//! Decode + encode of one request, per codec: what the wire costs the bridge per request,
//! without any I/O. `cargo bench --bench codecs`.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder};

use extauth_bridge::protocol::{EjabberdCodec, LineCodec};

const AUTH: &[u8] = b"auth:romeo:example.net:correct horse battery staple";

/// Decodes one request from `wire` and encodes its answer, as the request loop does.
fn round<C>(codec: &mut C, wire: &[u8], input: &mut BytesMut, output: &mut BytesMut) -> bool
where
    C: Decoder<Item = extauth_bridge::request::Incoming, Error = std::io::Error>
        + Encoder<bool, Error = std::io::Error>,
{
    input.extend_from_slice(wire);
    let request = codec.decode(input).ok().flatten();
    let ok = matches!(request, Some(Ok(_)));
    let _ = codec.encode(ok, output);
    output.clear();
    ok
}

fn codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode+encode one auth");
    g.throughput(Throughput::Elements(1));

    let mut ejabberd = (AUTH.len() as u16).to_be_bytes().to_vec();
    ejabberd.extend_from_slice(AUTH);
    g.bench_function("ejabberd", |b| {
        let (mut codec, mut input, mut output) = (
            EjabberdCodec,
            BytesMut::with_capacity(4096),
            BytesMut::new(),
        );
        b.iter(|| {
            assert!(round(
                &mut codec,
                black_box(&ejabberd),
                &mut input,
                &mut output
            ))
        })
    });

    let mut line = AUTH.to_vec();
    line.push(b'\n');
    g.bench_function("line", |b| {
        let (mut codec, mut input, mut output) = (
            LineCodec::default(),
            BytesMut::with_capacity(4096),
            BytesMut::new(),
        );
        b.iter(|| assert!(round(&mut codec, black_box(&line), &mut input, &mut output)))
    });
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);

//! Every request decoder: the first byte picks a method of `Method::ALL`, the rest is its payload,
//! decoded as that method's request exactly as the router does (`decode_request`: postcard, then
//! the limit checks). Nothing may panic; a request that decodes must encode to at most as many
//! bytes and decode from them to the same value (and pass the same checks).

#![no_main]

use libfuzzer_sys::fuzz_target;
use quarry_proto::{decode_request, encode, with_request_type, Method, RequestVisitor, Rpc};

#[global_allocator]
static ALLOC: quarry_fuzz::CappedAlloc = quarry_fuzz::CappedAlloc;

struct RoundTrip<'a>(&'a [u8]);

impl RequestVisitor for RoundTrip<'_> {
    type Output = ();

    fn visit<R: Rpc + PartialEq + std::fmt::Debug>(self) {
        let checked = decode_request::<R>(self.0);
        // Without the checks, the same bytes decode the same way.
        let plain = quarry_proto::decode::<R>(self.0);
        match (&checked, &plain) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Ok(_), Err(e)) => panic!("checked decode succeeded, plain failed: {e}"),
            (Err(_), _) => {}
        }
        if let Ok(request) = checked {
            let bytes = encode(&request).expect("a decoded request encodes");
            assert!(bytes.len() <= self.0.len(), "encoding grew");
            assert_eq!(decode_request::<R>(&bytes).expect("re-decode"), request);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let method = Method::ALL[pick as usize % Method::ALL.len()];
    with_request_type(method, RoundTrip(payload));
    // The untyped entry point agrees.
    let any = quarry_proto::decode_request_any(method, payload);
    struct Accepts;
    impl RequestVisitor for Accepts {
        type Output = fn(&[u8]) -> bool;
        fn visit<R: Rpc + PartialEq + std::fmt::Debug>(self) -> Self::Output {
            |b| decode_request::<R>(b).is_ok()
        }
    }
    assert_eq!(any.is_ok(), with_request_type(method, Accepts)(payload));
});

//! `doxm-gate explain`, run as users run it: one datagram, one device state, one JSON line.

use std::process::Command;
use std::sync::LazyLock;

/// SPEC section 4: the real OBT request (NON GET /oic/sec/doxm?owned=FALSE), as hex.
static OBT_REQUEST_HEX: LazyLock<String> =
    LazyLock::new(|| hex::encode(doxm_gate::wire::fixtures::OBT_REQUEST));
/// The same request as CON (type bits 00), as a unicast follow-up would be.
static OBT_REQUEST_CON_HEX: LazyLock<String> = LazyLock::new(|| {
    let mut con = doxm_gate::wire::fixtures::OBT_REQUEST;
    con[0] &= 0b1100_1111;
    hex::encode(con)
});

fn explain(args: &[&str]) -> (i32, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_doxm-gate")).arg("explain").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

fn state(dos: &'static str, owned: &'static str, doc: &'static str) -> Vec<&'static str> {
    vec!["--dos", dos, "--owned", owned, "--doc", doc]
}

#[test]
fn multicast_outcomes() {
    let cases: [(Vec<&str>, &str); 6] = [
        (state("1", "false", "false"), r#"{"outcome":"answer","reason":"ok"}"#),
        (state("1", "false", "true"), r#"{"outcome":"ignore","reason":"doc-open"}"#),
        (state("3", "true", "false"), r#"{"outcome":"ignore","reason":"not-rfotm"}"#),
        (
            [state("1", "false", "false"), vec!["--bridge", "unowned"]].concat(),
            r#"{"outcome":"ignore","reason":"bridge-unowned"}"#,
        ),
        (
            [state("1", "false", "false"), vec!["--known", "false"]].concat(),
            r#"{"outcome":"ignore","reason":"state-unknown"}"#,
        ),
        (
            [state("1", "false", "false"), vec!["--uuid", "00000000-0000-0000-0000-000000000001"]]
                .concat(),
            r#"{"outcome":"answer","reason":"ok"}"#,
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["--hex", &OBT_REQUEST_HEX];
        all.extend(args.iter());
        assert_eq!(explain(&all), (0, want.to_owned()), "{args:?}");
    }
}

#[test]
fn unicast_outcomes() {
    let run = |hex, dos, owned, doc| {
        let mut args = vec!["--hex", hex, "--unicast"];
        args.extend(state(dos, owned, doc));
        explain(&args).1
    };
    assert_eq!(
        run(&OBT_REQUEST_CON_HEX, "1", "false", "false"),
        r#"{"outcome":"2.05","reason":"ok"}"#
    );
    assert_eq!(
        run(&OBT_REQUEST_CON_HEX, "3", "true", "false"),
        r#"{"outcome":"4.01","reason":"not-rfotm"}"#
    );
    assert_eq!(
        run(&OBT_REQUEST_CON_HEX, "1", "false", "true"),
        r#"{"outcome":"4.01","reason":"doc-open"}"#
    );
    // NON unicast: the response is NON, same codes.
    assert_eq!(run(&OBT_REQUEST_HEX, "1", "false", "false"), r#"{"outcome":"2.05","reason":"ok"}"#);
}

#[test]
fn malformed_and_bad_input() {
    let (code, out) = explain(&["--hex", "50", "--dos", "1", "--owned", "false", "--doc", "false"]);
    assert_eq!((code, out.as_str()), (0, r#"{"outcome":"ignore","reason":"header-truncated"}"#));
    let (code, out) = explain(&["--hex", "zz", "--dos", "1", "--owned", "false", "--doc", "false"]);
    assert_eq!((code, out.as_str()), (2, ""));
    let (code, _) =
        explain(&["--hex", &OBT_REQUEST_HEX, "--dos", "7", "--owned", "false", "--doc", "false"]);
    assert_eq!(code, 2, "dos out of range is a usage error");
}

/// A NON (or CON) GET /oic/sec/doxm with these Uri-Query options, as hex.
fn doxm_hex(ty: doxm_gate::wire::MessageType, queries: &[&str]) -> String {
    use doxm_gate::wire::{option, Code, Writer};
    let mut buf = [0u8; 256];
    let mut w = Writer::new(&mut buf, ty, Code::GET, 0xf1cd, b"tok").unwrap();
    for segment in ["oic", "sec", "doxm"] {
        w.option(option::URI_PATH, segment.as_bytes()).unwrap();
    }
    for q in queries {
        w.option(option::URI_QUERY, q.as_bytes()).unwrap();
    }
    let len = w.finish();
    buf[..len].iter().map(|b| format!("{b:02x}")).collect()
}

/// `deviceuuid` (OCF's doxm schema) against the device's `--uuid`.
#[test]
fn deviceuuid_query() {
    use doxm_gate::wire::MessageType::{Confirmable, NonConfirmable};
    let this = "deviceuuid=50E1A3AE-6A0C-4AC0-7B4F-D1D818AE3403"; // the default --uuid
    let other = "deviceuuid=00000000-0000-0000-0000-000000000001";
    let cases: [(&[&str], &[&str], &str); 6] = [
        (&["owned=FALSE", this], &[], r#"{"outcome":"answer","reason":"ok"}"#),
        (&["owned=FALSE", other], &[], r#"{"outcome":"ignore","reason":"deviceuuid-mismatch"}"#),
        (
            &["owned=FALSE", other],
            &["--uuid", "00000000-0000-0000-0000-000000000001"],
            r#"{"outcome":"answer","reason":"ok"}"#,
        ),
        (&["deviceuuid="], &[], r#"{"outcome":"ignore","reason":"deviceuuid-invalid"}"#),
        // Both filters: each must name the device.
        (
            &["di=50e1a3ae-6a0c-4ac0-7b4f-d1d818ae3403", other],
            &[],
            r#"{"outcome":"ignore","reason":"deviceuuid-mismatch"}"#,
        ),
        // An eligible device is not enough: a DOC open still silences it.
        (&[this], &["--doc", "true"], r#"{"outcome":"ignore","reason":"doc-open"}"#),
    ];
    for (queries, extra, want) in cases {
        let hex = doxm_hex(NonConfirmable, queries);
        let mut args = vec!["--hex", hex.as_str(), "--dos", "1", "--owned", "false"];
        if !extra.contains(&"--doc") {
            args.extend(["--doc", "false"]);
        }
        args.extend(extra);
        assert_eq!(explain(&args), (0, want.to_owned()), "{queries:?} {extra:?}");
    }
    // Unicast does not check it.
    let hex = doxm_hex(Confirmable, &["owned=FALSE", other]);
    let args =
        ["--hex", hex.as_str(), "--unicast", "--dos", "1", "--owned", "false", "--doc", "false"];
    assert_eq!(explain(&args), (0, r#"{"outcome":"2.05","reason":"ok"}"#.to_owned()));
}

/// `--request obt|plgd` stands for a real client's discovery, so that no one needs
/// the hex at hand; exactly one of `--hex` and `--request` is required.
#[test]
fn request_presets_of_real_clients() {
    for preset in ["obt", "plgd"] {
        let with = |dos, owned, doc| {
            let mut args = vec!["--request", preset];
            args.extend(state(dos, owned, doc));
            explain(&args)
        };
        assert_eq!(
            with("1", "false", "false"),
            (0, r#"{"outcome":"answer","reason":"ok"}"#.into())
        );
        assert_eq!(
            with("1", "false", "true"),
            (0, r#"{"outcome":"ignore","reason":"doc-open"}"#.into()),
            "{preset}"
        );
        assert_eq!(
            with("3", "true", "false"),
            (0, r#"{"outcome":"ignore","reason":"not-rfotm"}"#.into()),
            "{preset}"
        );
    }
    // The obt preset is SPEC section 4's request: the same answers as its hex.
    let mut by_hex = vec!["--hex", &OBT_REQUEST_HEX];
    by_hex.extend(state("1", "false", "true"));
    let mut by_name = vec!["--request", "obt"];
    by_name.extend(state("1", "false", "true"));
    assert_eq!(explain(&by_hex), explain(&by_name));
    // Neither, both, or an unknown preset: usage errors.
    for args in [
        state("1", "false", "false"),
        [vec!["--request", "obt", "--hex", &OBT_REQUEST_HEX], state("1", "false", "false")]
            .concat(),
        [vec!["--request", "aiocoap"], state("1", "false", "false")].concat(),
    ] {
        assert_eq!(explain(&args).0, 2, "{args:?}");
    }
}

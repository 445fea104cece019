use super::*;
use std::collections::BTreeMap;

/// Share of the corpus the shipped rules must class as a person would.
/// The corpus is real provider wording; every miss must also be listed,
/// with its reason, in the corpus file's `known_miss`es.
const AGREEMENT_PERCENT_MIN: f64 = 90.0;

fn shipped() -> Classifier {
    Classifier::shipped()
}

#[test]
fn shipped_rules_parse_and_name_their_sources() {
    let rules = Classifier::from_toml(include_str!("rules.toml"), "rules.toml").unwrap();
    assert!(rules.len() >= 20, "{} shipped rules", rules.len());
    assert!(rules.iter().any(|r| r.tier == Tier::Fallback));
    for r in &rules {
        let source = r.source.as_deref().unwrap_or("");
        assert!(!source.is_empty(), "rule at line {} has no source", r.line);
    }
    // Every class but a few is reachable by a shipped text rule.
    let classes: std::collections::HashSet<Class> = rules.iter().map(|r| r.class).collect();
    assert!(classes.len() >= 9, "{classes:?}");
    let _ = shipped();
}

#[test]
fn class_names_round_trip_and_serialize_as_names() {
    for class in Class::ALL {
        assert_eq!(Class::parse(class.name()), Some(class));
        assert_eq!(class.to_string(), class.name());
        let value = toml::Value::try_from(class).unwrap();
        assert_eq!(value.as_str(), Some(class.name()));
        assert_eq!(class.suppresses(), class == Class::InvalidRecipient);
    }
    let names: std::collections::HashSet<&str> = Class::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(names.len(), Class::ALL.len());
    assert_eq!(Class::parse("Mailbox_Full"), None);
    assert_eq!(Class::parse(""), None);
}

#[test]
fn reply_codes_are_found_at_the_start_or_after_a_colon() {
    let e = |c, s, d| {
        Some(Enhanced {
            class: c,
            subject: s,
            detail: d,
        })
    };
    assert_eq!(reply_codes("550 5.1.1 <a@b>: no"), (Some(550), e(5, 1, 1)));
    assert_eq!(reply_codes("550-5.1.10 x"), (Some(550), e(5, 1, 10)));
    assert_eq!(
        reply_codes("421 4.7.650 The mail"),
        (Some(421), e(4, 7, 650))
    );
    assert_eq!(reply_codes("550 User unknown"), (Some(550), None));
    assert_eq!(reply_codes("552"), (Some(552), None));
    assert_eq!(
        reply_codes("mx.example.com [192.0.2.1]: greeting: 554 5.7.1 blocked"),
        (Some(554), e(5, 7, 1))
    );
    assert_eq!(
        reply_codes("STARTTLS refused: 454 4.7.0 TLS not available"),
        (Some(454), e(4, 7, 0))
    );
    // No reply: an I/O error, a bare enhanced code, a code out of range.
    assert_eq!(
        reply_codes("connection lost after RCPT: timed out"),
        (None, None)
    );
    assert_eq!(reply_codes("4.4.7 Message expired"), (None, None));
    assert_eq!(reply_codes("600 what"), (None, None));
    assert_eq!(reply_codes("5500 x"), (None, None));
    // A malformed enhanced code is no code: too many parts, a bad class.
    assert_eq!(reply_codes("550 5.1.1.1 x"), (Some(550), None));
    assert_eq!(reply_codes("550 3.1.1 x"), (Some(550), None));
    assert_eq!(reply_codes("550 5.1234.1 x"), (Some(550), None));
}

#[test]
fn enhanced_code_table() {
    let class = |c, s, d| {
        by_enhanced_code(Enhanced {
            class: c,
            subject: s,
            detail: d,
        })
    };
    assert_eq!(class(5, 1, 1), Some(Class::InvalidRecipient));
    assert_eq!(class(5, 1, 2), Some(Class::InvalidRecipient));
    assert_eq!(class(5, 1, 10), Some(Class::InvalidRecipient));
    assert_eq!(class(4, 2, 2), Some(Class::MailboxFull));
    assert_eq!(class(5, 2, 2), Some(Class::MailboxFull));
    assert_eq!(class(5, 3, 4), Some(Class::MessageTooLarge));
    assert_eq!(class(5, 2, 3), Some(Class::MessageTooLarge));
    assert_eq!(class(4, 4, 3), Some(Class::DnsFailure));
    assert_eq!(class(4, 4, 1), Some(Class::ConnectionFailure));
    assert_eq!(class(4, 7, 0), Some(Class::RateLimited));
    assert_eq!(class(5, 7, 1), Some(Class::ReputationOrPolicy));
    assert_eq!(class(5, 7, 26), Some(Class::ReputationOrPolicy));
    // Codes that say nothing precise leave it to fallbacks and the basic code.
    assert_eq!(class(5, 0, 0), None);
    assert_eq!(class(5, 5, 1), None);
    assert_eq!(class(5, 6, 7), None);
    assert_eq!(by_reply_code(552), Some(Class::MailboxFull));
    assert_eq!(by_reply_code(550), None);
}

#[test]
fn order_rules_then_code_then_fallbacks_then_reply_code() {
    let c = shipped();
    let by = |reply: &str| {
        let (class, by) = c.explain(reply);
        (class, by.to_string())
    };
    // A text rule beats the code: 454 4.7.0 alone reads as throttling.
    let (class, why) = by("STARTTLS refused: 454 4.7.0 TLS not available due to local problem");
    assert_eq!(class, Class::TlsFailure);
    assert!(why.starts_with("rule at shipped rules.toml line"), "{why}");
    // Many providers send 550 5.7.1 for spam and for blocklists alike.
    assert_eq!(
        c.classify("550 5.7.1 This message is likely unsolicited email."),
        Class::SpamOrContent
    );
    assert_eq!(
        c.classify("550 5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org"),
        Class::ReputationOrPolicy
    );
    // A precise code beats a broad word (a fallback): still invalid.
    let (class, why) = by("550 5.1.1 <a@example.com>: Access denied");
    assert_eq!(
        (class, why.as_str()),
        (Class::InvalidRecipient, "enhanced code 5.1.1")
    );
    // An imprecise code leaves it to the fallbacks.
    let (class, why) = by("550 5.0.0 Blocked");
    assert_eq!(class, Class::ReputationOrPolicy);
    assert!(why.starts_with("fallback at shipped"), "{why}");
    // Then the basic code, then nothing.
    assert_eq!(
        by("552 Requested action aborted"),
        (Class::MailboxFull, "reply code 552".into())
    );
    assert_eq!(
        by("451 Something odd"),
        (Class::Other, "nothing matched".into())
    );
    assert_eq!(by(""), (Class::Other, "nothing matched".into()));
}

#[test]
fn spates_own_texts() {
    let c = shipped();
    let cases = [
        ("550 5.7.1 Bounced by the operator", Class::Other),
        (
            "556 5.1.10 example.com accepts no mail (null MX)",
            Class::InvalidRecipient,
        ),
        (
            "550 5.1.2 example.com: domain does not exist",
            Class::InvalidRecipient,
        ),
        (
            "451 4.4.3 example.com: 192.0.2.53:53: timed out (example.com. MX)",
            Class::DnsFailure,
        ),
        (
            "mx.example.com [192.0.2.25]: greeting: Connection refused (os error 111)",
            Class::ConnectionFailure,
        ),
        (
            "mx.example.com [192.0.2.25]: greeting: 421 4.7.0 Try again later, closing connection.",
            Class::RateLimited,
        ),
        (
            "TLS handshake with mx.example.com: invalid peer certificate: UnknownIssuer",
            Class::TlsFailure,
        ),
        (
            "connection lost after RCPT: Connection reset by peer (os error 104)",
            Class::ConnectionFailure,
        ),
        (
            "452 4.2.2 The recipient's inbox is out of storage space. (gave up after 9 attempts)",
            Class::MailboxFull,
        ),
    ];
    for (reply, want) in cases {
        assert_eq!(c.classify(reply), want, "{reply}");
    }
}

#[test]
fn long_replies_are_cut_at_a_character() {
    let c = shipped();
    let long = format!("550 5.1.1 {}", "é".repeat(REPLY_BYTES_MAX));
    assert_eq!(c.classify(&long), Class::InvalidRecipient);
    // Wording past the limit is not looked at.
    let late = format!("550 {} user unknown", "x".repeat(REPLY_BYTES_MAX));
    assert_eq!(c.classify(&late), Class::Other);
}

#[test]
fn operator_rules_come_first() {
    let text = r#"
[[rule]]
pattern = '\[TSS04\]'
class = "reputation_or_policy"
source = "we treat Yahoo TSS04 as reputation"

[[fallback]]
pattern = 'please slow down'
class = "rate_limited"
"#;
    let c = Classifier::with_toml(text, "ops.toml").unwrap();
    let tss04 = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints";
    assert_eq!(shipped().classify(tss04), Class::RateLimited);
    let (class, by) = c.explain(tss04);
    assert_eq!(class, Class::ReputationOrPolicy);
    assert_eq!(
        by,
        By::Rule {
            origin: "ops.toml",
            line: 3,
            tier: Tier::Rule
        }
    );
    // An operator fallback comes before the shipped ones, after the code.
    assert_eq!(c.classify("550 please slow down"), Class::RateLimited);
    assert_eq!(
        c.classify("550 5.1.1 please slow down"),
        Class::InvalidRecipient
    );
    // The shipped rules still apply.
    assert_eq!(c.classify("552 5.2.2 Over quota"), Class::MailboxFull);
}

#[test]
fn operator_file_from_disk() {
    let dir = std::env::temp_dir().join(format!("spate-classify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bounce-rules.toml");
    std::fs::write(
        &path,
        "[[rule]]\npattern = 'mailbox on vacation'\nclass = \"other\"\n",
    )
    .unwrap();
    let c = Classifier::with_file(&path).unwrap();
    assert_eq!(c.classify("550 5.1.1 mailbox on vacation"), Class::Other);
    std::fs::write(&path, "#".repeat(RULES_FILE_BYTES_MAX as usize + 1)).unwrap();
    let e = Classifier::with_file(&path).unwrap_err();
    assert!(
        e.contains("bounce-rules.toml") && e.contains("more than"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let e = Classifier::with_file(&dir.join("missing.toml")).unwrap_err();
    assert!(e.contains("missing.toml"), "{e}");
}

fn error_of(text: &str) -> String {
    Classifier::with_toml(text, "ops.toml").unwrap_err()
}

#[test]
fn operator_file_errors_name_file_line_and_rule() {
    let bad_regex = "[[rule]]\npattern = 'ok'\nclass = \"other\"\n\n[[rule]]\npattern = 'a(b'\nclass = \"other\"\n";
    let e = error_of(bad_regex);
    assert!(
        e.starts_with("ops.toml line 6 (rule 2): pattern \"a(b\" is not a valid regex"),
        "{e}"
    );

    let e = error_of("[[fallback]]\npattern = 'x'\nclass = \"bounced\"\n");
    assert!(
        e.starts_with("ops.toml line 2 (fallback 1): unknown class \"bounced\""),
        "{e}"
    );
    assert!(e.contains("invalid_recipient, mailbox_full"), "{e}");

    let e = error_of("[[rule]]\npattern = 'x*'\nclass = \"other\"\n");
    assert!(
        e.contains("line 2 (rule 1)") && e.contains("matches the empty text"),
        "{e}"
    );

    let long = format!(
        "[[rule]]\npattern = '{}'\nclass = \"other\"\n",
        "a".repeat(PATTERN_CHARS_MAX + 1)
    );
    let e = error_of(&long);
    assert!(
        e.contains("line 2 (rule 1): a pattern has 1 to 1000 characters, this one 1001"),
        "{e}"
    );

    let e = error_of("[[rule]]\npattern = 'x'\nclass = \"other\"\nwhy = \"typo\"\n");
    assert!(
        e.starts_with("ops.toml: ") && e.contains("unknown field `why`"),
        "{e}"
    );

    let e = error_of("[[rule]\npattern = 'x'\n");
    assert!(e.starts_with("ops.toml: ") && e.contains("line 1"), "{e}");

    let e = error_of("[[rule]]\nclass = \"other\"\n");
    assert!(e.contains("missing field `pattern`"), "{e}");
}

#[test]
fn too_many_rules() {
    let one = "[[rule]]\npattern = 'x'\nclass = \"other\"\n";
    let at_limit = one.repeat(RULES_PER_FILE_MAX);
    assert_eq!(
        Classifier::from_toml(&at_limit, "ops.toml").unwrap().len(),
        RULES_PER_FILE_MAX
    );
    let over = format!("{at_limit}[[fallback]]\npattern = 'y'\nclass = \"other\"\n");
    let e = error_of(&over);
    assert_eq!(
        e,
        "ops.toml: 1001 rules, more than the 1000 a file may have"
    );
}

/// The corpus file: real replies with the class a person gives them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Corpus {
    entry: Vec<Entry>,
    #[serde(default)]
    known_miss: Vec<Miss>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    reply: String,
    expected: String,
    source: String,
}

/// A disagreement accepted with its reason: the entry whose reply starts
/// with `reply_starts`, classed `got`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Miss {
    reply_starts: String,
    got: String,
    reason: String,
}

#[test]
fn corpus_agreement() {
    let corpus: Corpus = toml::from_str(include_str!("../../tests/data/replies.toml")).unwrap();
    let c = shipped();
    // Per expected class: (entries, agreed).
    let mut table: BTreeMap<&str, (usize, usize)> =
        Class::ALL.iter().map(|k| (k.name(), (0, 0))).collect();
    let mut misses = Vec::new();
    for e in &corpus.entry {
        let expected = Class::parse(&e.expected)
            .unwrap_or_else(|| panic!("unknown expected class {:?} for {:?}", e.expected, e.reply));
        assert!(
            e.source.starts_with("http") || e.source.starts_with("spate:"),
            "{}",
            e.source
        );
        let (got, by) = c.explain(&e.reply);
        let row = table.get_mut(expected.name()).unwrap();
        row.0 += 1;
        if got == expected {
            row.1 += 1;
        } else {
            misses.push((e, got, by.to_string()));
        }
    }
    let total = corpus.entry.len();
    let agreed = total - misses.len();
    let percent = 100.0 * agreed as f64 / total as f64;
    println!("| class | entries | agreed |\n|---|---:|---:|");
    for (name, (n, ok)) in &table {
        println!("| {name} | {n} | {ok} |");
    }
    println!("| **total** | **{total}** | **{agreed} ({percent:.1}%)** |\n");
    for (e, got, by) in &misses {
        println!("MISS expected {} got {got} ({by}): {}", e.expected, e.reply);
    }
    for (name, (n, _)) in &table {
        assert!(*n > 0, "the corpus has no {name} entry");
    }
    assert!(percent >= AGREEMENT_PERCENT_MIN, "agreement {percent:.1}%");
    // Every miss is known, with a reason; every known miss still happens.
    for (e, got, _) in &misses {
        let known = corpus
            .known_miss
            .iter()
            .find(|m| e.reply.starts_with(&m.reply_starts) && m.got == got.name());
        assert!(
            known.is_some_and(|m| !m.reason.is_empty()),
            "unlisted miss: {got} for {:?}",
            e.reply
        );
    }
    for m in &corpus.known_miss {
        let happens = misses
            .iter()
            .any(|(e, got, _)| e.reply.starts_with(&m.reply_starts) && m.got == got.name());
        assert!(
            happens,
            "known miss no longer happens: {:?}",
            m.reply_starts
        );
    }
}

//! The inline commands recognised, and what their arguments must look like.
//!
//! An inline command is a line of text, so a line of ordinary English can
//! start with a command's name ("Set the table for dinner", "Get well
//! soon"). Only the commands people type inline (into telnet or nc, or a
//! load balancer's health check) are taken, and only when their arguments
//! fit: the right number, numbers where numbers go, known words where
//! options or subcommands go; commands that take any number of keys take
//! at most two inline. RESP commands are not limited this way.

/// What the arguments of one inline command must be.
struct Rule {
    name: &'static str,
    /// Fewest and most arguments.
    min: usize,
    max: usize,
    /// A further check of the arguments, beyond their number.
    check: fn(&[&[u8]]) -> bool,
}

const MANY: usize = usize::MAX;

fn any(_: &[&[u8]]) -> bool {
    true
}

fn integer(arg: &[u8]) -> bool {
    let digits = arg.strip_prefix(b"-").unwrap_or(arg);
    !digits.is_empty() && digits.len() <= 20 && digits.iter().all(u8::is_ascii_digit)
}

fn one_of(arg: &[u8], words: &[&str]) -> bool {
    words.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(arg))
}

fn all_integers(args: &[&[u8]]) -> bool {
    args.iter().all(|a| integer(a))
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]`.
fn set_options(args: &[&[u8]]) -> bool {
    let mut rest = args.get(2..).unwrap_or_default().iter();
    while let Some(option) = rest.next() {
        if one_of(option, &["EX", "PX", "EXAT", "PXAT"]) {
            if !rest.next().is_some_and(|n| integer(n)) {
                return false;
            }
        } else if !one_of(option, &["NX", "XX", "GET", "KEEPTTL"]) {
            return false;
        }
    }
    true
}

/// `EXPIRE key seconds [NX|XX|GT|LT]`.
fn expire(args: &[&[u8]]) -> bool {
    args.get(1).is_some_and(|n| integer(n)) && args.get(2).is_none_or(|o| one_of(o, &["NX", "XX", "GT", "LT"]))
}

fn second_is_integer(args: &[&[u8]]) -> bool {
    args.get(1).is_some_and(|n| integer(n))
}

fn range(args: &[&[u8]]) -> bool {
    args.get(1..).is_some_and(all_integers)
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
fn hello(args: &[&[u8]]) -> bool {
    let Some((version, mut rest)) = args.split_first() else { return true };
    if !one_of(version, &["2", "3"]) {
        return false;
    }
    while let Some((option, more)) = rest.split_first() {
        rest = if one_of(option, &["AUTH"]) && more.len() >= 2 {
            &more[2..]
        } else if one_of(option, &["SETNAME"]) && !more.is_empty() {
            &more[1..]
        } else {
            return false;
        };
    }
    true
}

const INFO_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "commandstats",
    "latencystats",
    "sentinel",
    "cluster",
    "modules",
    "keyspace",
    "errorstats",
    "keysizes",
    "all",
    "default",
    "everything",
];

fn info(args: &[&[u8]]) -> bool {
    args.iter().all(|a| one_of(a, INFO_SECTIONS))
}

fn flush(args: &[&[u8]]) -> bool {
    args.iter().all(|a| one_of(a, &["ASYNC", "SYNC"]))
}

fn subcommand(words: &'static [&'static str]) -> impl Fn(&[&[u8]]) -> bool {
    move |args: &[&[u8]]| args.first().is_some_and(|a| one_of(a, words))
}

fn config(args: &[&[u8]]) -> bool {
    subcommand(&["GET", "SET", "RESETSTAT", "REWRITE", "HELP"])(args)
}

fn client(args: &[&[u8]]) -> bool {
    subcommand(&[
        "LIST",
        "ID",
        "INFO",
        "GETNAME",
        "SETNAME",
        "KILL",
        "PAUSE",
        "UNPAUSE",
        "REPLY",
        "NO-EVICT",
        "NO-TOUCH",
        "TRACKING",
        "TRACKINGINFO",
        "GETREDIR",
        "CACHING",
        "SETINFO",
        "UNBLOCK",
        "HELP",
    ])(args)
}

fn command(args: &[&[u8]]) -> bool {
    args.is_empty() || subcommand(&["COUNT", "DOCS", "INFO", "LIST", "GETKEYS", "GETKEYSANDFLAGS", "HELP"])(args)
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
fn scan(args: &[&[u8]]) -> bool {
    let Some((cursor, mut rest)) = args.split_first() else { return false };
    if !integer(cursor) {
        return false;
    }
    while let [option, value, more @ ..] = rest {
        let fits = one_of(option, &["MATCH", "TYPE"]) || (one_of(option, &["COUNT"]) && integer(value));
        if !fits {
            return false;
        }
        rest = more;
    }
    rest.is_empty()
}

fn pairs(args: &[&[u8]]) -> bool {
    args.len().is_multiple_of(2)
}

fn field_value_pairs(args: &[&[u8]]) -> bool {
    !args.len().is_multiple_of(2)
}

macro_rules! rules {
    ($($name:literal $min:literal ..= $max:expr, $check:expr;)+) => {
        const RULES: &[Rule] = &[$(Rule { name: $name, min: $min, max: $max, check: $check }),+];
    };
}

rules! {
    "AUTH" 1..=2, any;
    "BGSAVE" 0..=1, |a: &[&[u8]]| a.iter().all(|o| one_of(o, &["SCHEDULE"]));
    "CLIENT" 1..=MANY, client;
    "COMMAND" 0..=MANY, command;
    "CONFIG" 1..=MANY, config;
    "DBSIZE" 0..=0, any;
    "DECR" 1..=1, any;
    "DECRBY" 2..=2, second_is_integer;
    "DEL" 1..=2, any;
    "DISCARD" 0..=0, any;
    "ECHO" 1..=1, any;
    "EXEC" 0..=0, any;
    "EXISTS" 1..=2, any;
    "EXPIRE" 2..=3, expire;
    "FLUSHALL" 0..=1, flush;
    "FLUSHDB" 0..=1, flush;
    "GET" 1..=1, any;
    "HELLO" 0..=6, hello;
    "HGET" 2..=2, any;
    "HGETALL" 1..=1, any;
    "HSET" 3..=MANY, field_value_pairs;
    "INCR" 1..=1, any;
    "INCRBY" 2..=2, second_is_integer;
    "INFO" 0..=MANY, info;
    "KEYS" 1..=1, any;
    "LASTSAVE" 0..=0, any;
    "LLEN" 1..=1, any;
    "LRANGE" 3..=3, range;
    "MGET" 1..=2, any;
    "MONITOR" 0..=0, any;
    "MSET" 2..=MANY, pairs;
    "MULTI" 0..=0, any;
    "PEXPIRE" 2..=3, expire;
    "PING" 0..=1, any;
    "PTTL" 1..=1, any;
    "QUIT" 0..=0, any;
    "RANDOMKEY" 0..=0, any;
    "ROLE" 0..=0, any;
    "SAVE" 0..=0, any;
    "SCAN" 1..=7, scan;
    "SCARD" 1..=1, any;
    "SELECT" 1..=1, all_integers;
    "SET" 2..=7, set_options;
    "SMEMBERS" 1..=1, any;
    "STRLEN" 1..=1, any;
    "TIME" 0..=0, any;
    "TTL" 1..=1, any;
    "TYPE" 1..=1, any;
}

/// The longest inline command name.
pub const MAX_LEN: usize = 9;

/// The inline command named by `word` (any case), if it is one.
pub fn find(word: &[u8]) -> Option<&'static str> {
    RULES.iter().find(|r| r.name.as_bytes().eq_ignore_ascii_case(word)).map(|r| r.name)
}

/// Whether some inline command starts with `prefix` (any case).
pub fn is_prefix(prefix: &[u8]) -> bool {
    RULES.iter().any(|r| r.name.as_bytes().get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix)))
}

/// Whether the rest of the line after the command `name` (its arguments,
/// separated by spaces or tabs, a double-quoted one holding spaces) fits
/// the command.
pub fn arguments_fit(name: &str, rest: &[u8]) -> bool {
    let Some(rule) = RULES.iter().find(|r| r.name == name) else { return false };
    let Some(args) = split(rest) else { return false };
    (rule.min..=rule.max).contains(&args.len()) && (rule.check)(&args)
}

/// The arguments of an inline line, as Redis splits them: on spaces and
/// tabs, with "double quotes" around one that holds spaces. `None` for an
/// unbalanced quote.
fn split(line: &[u8]) -> Option<Vec<&[u8]>> {
    let mut args = Vec::new();
    let mut rest = line;
    loop {
        let Some(start) = rest.iter().position(|&b| b != b' ' && b != b'\t') else { return Some(args) };
        rest = &rest[start..];
        if let Some(quoted) = rest.strip_prefix(b"\"") {
            let end = quoted.iter().position(|&b| b == b'"')?;
            args.push(&quoted[..end]);
            rest = &quoted[end + 1..];
            if rest.first().is_some_and(|&b| b != b' ' && b != b'\t') {
                return None;
            }
        } else {
            let end = rest.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(rest.len());
            args.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
}

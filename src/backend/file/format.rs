//! The users file's text: one line kept per line of the file, parsed and rendered back byte
//! for byte, the index of its accounts ([`UsersFile`]), which accounts a line can hold
//! ([`storable`]), which hashes are locked ([`is_locked`]), and what is wrong with a line
//! ([`BadLine`], [`BadKind`]).
//!
//! Pure, bytes in and bytes out: the fuzz targets drive it directly. It must not touch the
//! file system, log, or hash; whether a stored hash is over the cost limits it asks
//! [`super::hash`].

use std::collections::HashMap;

use super::hash::{within_limits, HashCost};
// Accounts are indexed under `account_key`, the one folding the cache uses too: the servers
// nodeprep/nameprep JIDs before asking, and an admin-edited file may not have.
use crate::request::{account_key, normalize_account, Account};

/// The longest account line read: a bare JID is at most 2047 bytes (RFC 7622: 1023 each for
/// the localpart and domainpart), a PHC string a few hundred. What is longer is not an account,
/// and is not worth parsing as one.
const MAX_ENTRY_LINE: usize = 4096;

/// Characters that would break the `user@domain:HASH` line format.
/// Also what RFC 7622 allows a localpart or domainpart (1023 bytes, as written to the file),
/// so that every entry we write stays under [`MAX_ENTRY_LINE`] and reads back.
pub fn storable(account: &Account) -> bool {
    let bad = |c: char| c == ':' || c == '@' || c == '#' || c.is_whitespace() || c.is_control();
    let fits = |part: &str| normalize_account(part).len() <= 1023;
    !account.user.contains(bad)
        && !account.server.contains(bad)
        && fits(&account.user)
        && fits(&account.server)
}

/// The hash written for an account remembered from another backend (`remember_accounts`):
/// the account exists, no password verifies.
pub const LOCKED: &str = "!";

/// Whether a stored hash is locked, as in `/etc/shadow`: `!`, `!` before anything (a hash
/// disabled by `usermod -L`), or `*`. Such an entry exists for `isuser` and never
/// authenticates: it is verified like a missing account, against the decoy.
pub fn is_locked(hash: &str) -> bool {
    hash.starts_with('!') || hash.starts_with('*')
}

/// A parsed users file, keeping every line so a rewrite changes only what it must.
#[derive(Debug, Default, Clone)]
pub struct UsersFile {
    lines: Vec<Line>,
    index: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
enum Line {
    Entry {
        key: String,
        hash: String,
        /// Its hash asks for more than the limits: the account exists (`isuser`, and no
        /// one can register it again), but no password verifies. Kept, so that a rewrite
        /// does not lose it; a new password replaces it.
        refused: bool,
    },
    /// A later entry for an account the file already has: never used, written back
    /// unchanged, and dropped when that account is changed or removed, so it can never
    /// come back to life as the account's entry.
    Duplicate { key: String, raw: Vec<u8> },
    /// Blank, comment or malformed: written back unchanged, byte for byte (it may not even
    /// be UTF-8: an admin's Latin-1 comment must survive a rewrite).
    Other(Vec<u8>),
}

/// A line that could not be used, by number; its content is not kept (it may be a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub number: usize,
    pub reason: &'static str,
    pub kind: BadKind,
}

/// What is wrong with a [`BadLine`], and so how loud `check` is about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKind {
    /// Not an account line: ignored by the daemon; `check` fails on it.
    Malformed,
    /// A comment that is not UTF-8: ignored and kept as it is; a warning.
    Comment,
    /// An account whose hash is over the limits: it exists, no password verifies; a warning.
    Refused,
    /// A second entry for an account; holds the line of the first one, which is the one
    /// used. A warning.
    Duplicate(usize),
}

impl BadLine {
    /// Whether `check` only warns about it (the file works as the admin meant).
    pub fn is_warning(&self) -> bool {
        self.kind != BadKind::Malformed
    }
}

/// The lines of a file, cut at `\n` (no empty last line), as bytes: one line that is not
/// UTF-8 must not make the whole file unreadable. A `\r` before the `\n` stays in the line,
/// so that a line kept as it is comes back byte for byte (and a rewrite of a rewrite changes
/// nothing); parsing an entry trims it like any other white space.
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let pieces = (!bytes.is_empty()).then(|| body.split(|&b| b == b'\n'));
    pieces.into_iter().flatten()
}

impl UsersFile {
    /// Parses a file's bytes. Every line is kept, whatever it holds; the ones that are not
    /// usable entries are returned as [`BadLine`]s.
    pub fn parse(bytes: impl AsRef<[u8]>) -> (UsersFile, Vec<BadLine>) {
        let mut file = UsersFile::default();
        let mut bad = Vec::new();
        for (i, raw) in split_lines(bytes.as_ref()).enumerate() {
            let Ok(line) = std::str::from_utf8(raw) else {
                // No account can be read from it (the servers send UTF-8 names): ignored,
                // and written back as it is. A comment is harmless, anything else is a
                // malformed line like any other.
                let comment = raw.trim_ascii_start().starts_with(b"#");
                bad.push(BadLine {
                    number: i + 1,
                    reason: "not UTF-8",
                    kind: if comment {
                        BadKind::Comment
                    } else {
                        BadKind::Malformed
                    },
                });
                file.lines.push(Line::Other(raw.to_vec()));
                continue;
            };
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                file.lines.push(Line::Other(raw.to_vec()));
                continue;
            }
            const TOO_LONG: &str = "longer than an account line can be (4096 bytes)";
            let entry = if trimmed.len() > MAX_ENTRY_LINE {
                Err(TOO_LONG)
            } else {
                // Measured as it is written back too: lower case can be longer (`İ`), and
                // a line that grew past the limit would be lost at the next rewrite.
                parse_entry(trimmed).and_then(|(user, server, hash)| {
                    let key = account_key(user, server);
                    if key.len() + 1 + hash.len() > MAX_ENTRY_LINE {
                        Err(TOO_LONG)
                    } else {
                        Ok((key, hash))
                    }
                })
            };
            match entry {
                Ok((key, hash)) => {
                    // One `Line` per line of text, so an index is a line number minus one.
                    if let Some(&first) = file.index.get(&key) {
                        bad.push(BadLine {
                            number: i + 1,
                            reason: "duplicate account (the first entry is used; a password \
                                     change or removal applies to every entry)",
                            kind: BadKind::Duplicate(first + 1),
                        });
                        file.lines.push(Line::Duplicate {
                            key,
                            raw: raw.to_vec(),
                        });
                        continue;
                    }
                    let refused = within_limits(hash).err();
                    if let Some(reason) = refused {
                        bad.push(BadLine {
                            number: i + 1,
                            reason,
                            kind: BadKind::Refused,
                        });
                    }
                    file.index.insert(key.clone(), file.lines.len());
                    file.lines.push(Line::Entry {
                        key,
                        hash: hash.to_owned(),
                        refused: refused.is_some(),
                    });
                }
                Err(reason) => {
                    bad.push(BadLine {
                        number: i + 1,
                        reason,
                        kind: BadKind::Malformed,
                    });
                    file.lines.push(Line::Other(raw.to_vec()));
                }
            }
        }
        (file, bad)
    }

    /// The hash a password is verified against; `None` for a missing account, and for one
    /// whose hash is refused or locked: all three cost the decoy, and say no.
    pub fn hash_of(&self, user: &str, server: &str) -> Option<&str> {
        let i = *self.index.get(&account_key(user, server))?;
        match &self.lines[i] {
            Line::Entry {
                hash,
                refused: false,
                ..
            } if !is_locked(hash) => Some(hash),
            Line::Entry { .. } => None,
            Line::Duplicate { .. } | Line::Other(_) => None,
        }
    }

    /// Whether the account is in the file with a locked hash ([`is_locked`]).
    pub fn is_locked(&self, user: &str, server: &str) -> bool {
        self.index
            .get(&account_key(user, server))
            .is_some_and(|&i| matches!(&self.lines[i], Line::Entry { hash, .. } if is_locked(hash)))
    }

    pub fn contains(&self, user: &str, server: &str) -> bool {
        self.index.contains_key(&account_key(user, server))
    }

    /// The most common cost among the accounts' hashes (the first seen, on a tie); `None`
    /// when no hash is usable. Refused hashes do not count: a file of hostile lines must not
    /// make the decoy as dear as they are.
    pub fn typical_cost(&self) -> Option<HashCost> {
        let mut counts: Vec<(HashCost, usize)> = Vec::new();
        for line in &self.lines {
            let Line::Entry {
                hash,
                refused: false,
                ..
            } = line
            else {
                continue;
            };
            let Some(cost) = HashCost::of(hash) else {
                continue;
            };
            match counts.iter_mut().find(|(c, _)| *c == cost) {
                Some((_, n)) => *n += 1,
                None => counts.push((cost, 1)),
            }
        }
        // max_by_key keeps the last of equals: look from the end for the first seen.
        counts
            .into_iter()
            .rev()
            .max_by_key(|(_, n)| *n)
            .map(|(c, _)| c)
    }

    /// Accounts in file order, as `user@domain`, each once.
    pub fn accounts(&self) -> impl Iterator<Item = &str> {
        self.entries().map(|(key, _)| key)
    }

    /// [`Self::accounts`], each with whether its hash is locked ([`is_locked`]).
    pub fn entries(&self) -> impl Iterator<Item = (&str, bool)> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry { key, hash, .. } => Some((key.as_str(), is_locked(hash))),
            Line::Duplicate { .. } | Line::Other(_) => None,
        })
    }

    /// Sets the hash of an existing account, dropping its duplicate entries.
    /// `false` if there is no such account.
    pub fn set_hash(&mut self, user: &str, server: &str, new_hash: String) -> bool {
        let key = account_key(user, server);
        let Some(&i) = self.index.get(&key) else {
            return false;
        };
        if let Line::Entry { hash, refused, .. } = &mut self.lines[i] {
            *refused = within_limits(&new_hash).is_err();
            *hash = new_hash;
        }
        self.drop_duplicates_of(&key);
        true
    }

    /// Adds an account. `false` if it exists already.
    pub fn insert(&mut self, user: &str, server: &str, hash: String) -> bool {
        let key = account_key(user, server);
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key.clone(), self.lines.len());
        let refused = within_limits(&hash).is_err();
        self.lines.push(Line::Entry { key, hash, refused });
        true
    }

    /// Removes an account, every entry of it. `false` if there was none.
    pub fn remove(&mut self, user: &str, server: &str) -> bool {
        let key = account_key(user, server);
        if self.index.remove(&key).is_none() {
            return false;
        }
        self.lines
            .retain(|l| !matches!(l, Line::Entry { key: k, .. } if *k == key));
        self.drop_duplicates_of(&key);
        true
    }

    /// Drops the duplicate entries of `key` and re-indexes what remains.
    fn drop_duplicates_of(&mut self, key: &str) {
        self.lines
            .retain(|l| !matches!(l, Line::Duplicate { key: k, .. } if k == key));
        self.index = self
            .lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match l {
                Line::Entry { key, .. } => Some((key.clone(), i)),
                Line::Duplicate { .. } | Line::Other(_) => None,
            })
            .collect();
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in &self.lines {
            match line {
                Line::Entry { key, hash, .. } => {
                    out.extend_from_slice(key.as_bytes());
                    out.push(b':');
                    out.extend_from_slice(hash.as_bytes());
                }
                Line::Duplicate { raw, .. } | Line::Other(raw) => out.extend_from_slice(raw),
            }
            out.push(b'\n');
        }
        out
    }
}

fn parse_entry(line: &str) -> Result<(&str, &str, &str), &'static str> {
    let (jid, hash) = line.split_once(':').ok_or("expected user@domain:HASH")?;
    let (user, server) = jid
        .rsplit_once('@')
        .ok_or("expected user@domain before ':'")?;
    if user.is_empty() || server.is_empty() {
        return Err("empty user or domain");
    }
    if !hash.starts_with('$') && !is_locked(hash) {
        return Err("hash is not a PHC string (argon2id), a bcrypt hash or locked (`!`, `*`)");
    }
    Ok((user, server, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a rewrite would write, as text (the tests' files are UTF-8).
    fn rendered(users: &UsersFile) -> String {
        String::from_utf8(users.render()).unwrap()
    }

    #[test]
    fn parse_keeps_comments_and_reports_bad_lines() {
        let text = "# accounts\nromeo@example.net:$argon2id$x\n\nbroken line\njuliet@EXAMPLE.net:$2y$10$abc\nromeo@example.net:$argon2id$dup\n";
        let (users, bad) = UsersFile::parse(text);
        assert_eq!(users.hash_of("romeo", "example.net"), Some("$argon2id$x"));
        assert_eq!(users.hash_of("Juliet", "example.NET"), Some("$2y$10$abc"));
        assert_eq!(bad.iter().map(|b| b.number).collect::<Vec<_>>(), [4, 6]);
        assert_eq!(bad[0].kind, BadKind::Malformed);
        assert_eq!(bad[1].kind, BadKind::Duplicate(2));
        assert_eq!(rendered(&users), "# accounts\nromeo@example.net:$argon2id$x\n\nbroken line\njuliet@example.net:$2y$10$abc\nromeo@example.net:$argon2id$dup\n");
    }

    #[test]
    fn a_line_that_is_not_utf8_is_one_bad_line_kept_byte_for_byte() {
        let text = b"# Gr\xfc\xdfe\r\na@h:$x\nm\xfcller@h:$y\n\xff\xfe\nb@h:$z";
        let (mut users, bad) = UsersFile::parse(text);
        assert_eq!(users.accounts().collect::<Vec<_>>(), ["a@h", "b@h"]);
        let kinds: Vec<_> = bad.iter().map(|b| (b.number, b.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, BadKind::Comment),
                (3, BadKind::Malformed),
                (4, BadKind::Malformed)
            ]
        );
        assert!(bad[0].is_warning() && !bad[1].is_warning());
        // Kept with its `\r`; the last line needs no `\n`.
        assert_eq!(
            users.render(),
            b"# Gr\xfc\xdfe\r\na@h:$x\nm\xfcller@h:$y\n\xff\xfe\nb@h:$z\n"
        );
        assert!(users.set_hash("a", "h", "$new".into()));
        assert_eq!(
            users.render(),
            b"# Gr\xfc\xdfe\r\na@h:$new\nm\xfcller@h:$y\n\xff\xfe\nb@h:$z\n"
        );
        // An entry's own `\r` is white space around it.
        let (users, bad) = UsersFile::parse(b"a@h:$x\r\n");
        assert!(bad.is_empty());
        assert_eq!(users.hash_of("a", "h"), Some("$x"));
        assert!(UsersFile::parse(b"").0.render().is_empty());
        // Short enough as written, too long once lower-cased (`İ` is 2 bytes, `i̇` 3).
        let grows = format!("{}@h:$x\n", "İ".repeat(MAX_ENTRY_LINE / 2 - 4));
        let (users, bad) = UsersFile::parse(&grows);
        assert_eq!(
            (users.accounts().count(), bad[0].kind),
            (0, BadKind::Malformed)
        );
        assert!(!storable(&Account {
            user: "a".repeat(1024),
            server: "h".into()
        }));
        let long = format!("{}@h:$x\n", "a".repeat(MAX_ENTRY_LINE));
        let (users, bad) = UsersFile::parse(&long);
        assert_eq!(users.accounts().count(), 0);
        assert_eq!(bad[0].kind, BadKind::Malformed);
        assert_eq!(users.render(), long.as_bytes());
        assert_eq!(UsersFile::parse(b"\n\n").0.render(), b"\n\n");
    }

    #[test]
    fn locked_entries_exist_and_have_no_hash() {
        let text = "a@h:!\nb@h:!$argon2id$x\nc@h:*\nd@h:$x\ne@h:\nf@h:x!\n";
        let (mut users, bad) = UsersFile::parse(text);
        let entries: Vec<_> = users.entries().collect();
        assert_eq!(
            entries,
            [("a@h", true), ("b@h", true), ("c@h", true), ("d@h", false)]
        );
        // An empty hash, or one that is neither a hash nor locked, is still no entry.
        assert_eq!(bad.iter().map(|b| b.number).collect::<Vec<_>>(), [5, 6]);
        for user in ["a", "b", "c"] {
            assert!(users.contains(user, "h") && users.is_locked(user, "H"));
            assert_eq!(users.hash_of(user, "h"), None);
        }
        assert!(!users.is_locked("d", "h") && !users.is_locked("zz", "h"));
        assert_eq!(users.typical_cost(), None);
        assert!(users.insert("g", "h", LOCKED.into()));
        assert_eq!(rendered(&users), format!("{text}g@h:!\n"));
    }

    #[test]
    fn insert_remove_keep_index_consistent() {
        let (mut users, _) = UsersFile::parse("a@h:$x\nb@h:$y\nc@h:$z\n");
        assert!(users.remove("a", "h"));
        assert!(!users.remove("a", "h"));
        assert_eq!(users.hash_of("c", "h"), Some("$z"));
        assert!(users.insert("d", "h", "$w".into()));
        assert!(!users.insert("d", "h", "$w".into()));
        assert!(users.set_hash("b", "h", "$new".into()));
        assert_eq!(rendered(&users), "b@h:$new\nc@h:$z\nd@h:$w\n");
    }

    #[test]
    fn a_repeated_account_is_changed_and_removed_with_all_its_entries() {
        let text = "a@h:$1\nb@h:$b\nA@h:$2\n# c\na@H:$3\n";
        let (users, bad) = UsersFile::parse(text);
        assert_eq!(users.hash_of("a", "h"), Some("$1"));
        assert_eq!(users.accounts().collect::<Vec<_>>(), ["a@h", "b@h"]);
        let dups: Vec<_> = bad.iter().map(|b| (b.number, b.kind)).collect();
        assert_eq!(
            dups,
            [(3, BadKind::Duplicate(1)), (5, BadKind::Duplicate(1))]
        );
        // Untouched, the repeats are written back as they were.
        assert_eq!(rendered(&users), text);

        let mut removed = users.clone();
        assert!(removed.remove("a", "h"));
        assert_eq!(rendered(&removed), "b@h:$b\n# c\n");
        let (reread, bad) = UsersFile::parse(removed.render());
        assert!(!reread.contains("a", "h") && bad.is_empty());

        let mut changed = users;
        assert!(changed.set_hash("a", "h", "$new".into()));
        assert_eq!(rendered(&changed), "a@h:$new\nb@h:$b\n# c\n");
        assert!(changed.remove("b", "h"));
        assert!(changed.insert("d", "h", "$d".into()));
        assert_eq!(changed.hash_of("d", "h"), Some("$d"));
        assert_eq!(rendered(&changed), "a@h:$new\n# c\nd@h:$d\n");
    }
}

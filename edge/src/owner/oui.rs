//! MAC address vendors from the IEEE registry of 24-bit organizationally unique identifiers
//! (MA-L), as Debian's `ieee-data` package ships it (/usr/share/ieee-data/oui.csv). Read once
//! at start; optional: without the file devices carry no vendor.
//!
//! About 32,000 assignments to some 25,000 organizations: kept as a sorted array of (OUI,
//! name offset) pairs and one string of the distinct names, about 0.8 MiB, where a hash map
//! of boxed strings took 2.5 (an edge box's agent runs in a few MiB).

use std::{collections::HashMap, path::Path};

/// Where Debian's `ieee-data` puts the registry.
pub const DEFAULT_PATH: &str = "/usr/share/ieee-data/oui.csv";

/// OUI (the MAC's first three bytes) → organization name.
#[derive(Default)]
pub struct Oui {
    /// `(oui, start of the name in names)`, sorted by OUI.
    index: Vec<(u32, u32)>,
    /// The distinct names, each followed by a NUL.
    names: String,
}

impl Oui {
    pub fn load(path: &Path) -> std::io::Result<Oui> {
        let oui = Oui::parse(&std::fs::read_to_string(path)?);
        // The file's 3 MiB and the parse's scratch are freed, but glibc keeps freed heap
        // memory resident (its mmap threshold rises after the first large free): give it
        // back, or the agent would carry it (4 MiB measured) for its whole life.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory.
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(oui)
    }

    /// The registry's CSV: `Registry,Assignment,Organization Name,Organization Address`,
    /// fields quoted where they hold commas.
    pub fn parse(text: &str) -> Oui {
        let mut index = Vec::new();
        let mut names = String::new();
        let mut at: HashMap<String, u32> = HashMap::new();
        for line in text.lines().skip(1) {
            let mut f = Fields(line);
            let (Some(_), Some(hex), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Ok(v) = u32::from_str_radix(hex.trim(), 16) else {
                continue;
            };
            if hex.trim().len() != 6 {
                continue;
            }
            let name = name.trim();
            let start = *at.entry(name.to_string()).or_insert_with(|| {
                let start = names.len() as u32;
                names.push_str(name);
                names.push('\0');
                start
            });
            index.push((v, start));
        }
        index.sort_unstable();
        index.dedup_by_key(|e| e.0);
        index.shrink_to_fit();
        names.shrink_to_fit();
        Oui { index, names }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The vendor of `mac`; none for locally administered addresses (bit 1 of the first
    /// byte: random or assigned by software, not by a vendor).
    pub fn vendor(&self, mac: &[u8; 6]) -> Option<&str> {
        if mac[0] & 0x02 != 0 {
            return None;
        }
        let oui = u32::from_be_bytes([0, mac[0], mac[1], mac[2]]);
        let i = self.index.binary_search_by_key(&oui, |e| e.0).ok()?;
        let rest = &self.names[self.index[i].1 as usize..];
        rest.split('\0').next()
    }
}

/// CSV fields of one line (double quotes around a field that holds commas; `""` inside).
struct Fields<'a>(&'a str);

impl<'a> Iterator for Fields<'a> {
    type Item = std::borrow::Cow<'a, str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        if let Some(rest) = self.0.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = rest.char_indices();
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if rest[i + 1..].starts_with('"') {
                        out.push('"');
                        chars.next();
                        continue;
                    }
                    let after = &rest[i + 1..];
                    self.0 = after.strip_prefix(',').unwrap_or("");
                    return Some(out.into());
                }
                out.push(c);
            }
            self.0 = "";
            return Some(out.into());
        }
        match self.0.split_once(',') {
            Some((f, rest)) => {
                self.0 = rest;
                Some(f.into())
            }
            None => {
                let f = self.0;
                self.0 = "";
                Some(f.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_registry_with_quoted_names() {
        let csv = "Registry,Assignment,Organization Name,Organization Address\n\
                   MA-L,F4BD9E,\"Cisco Systems, Inc\",80 West Tasman Drive San Jose CA US 94568 \n\
                   MA-L,00D0EF,IGT,\"9295 PROTOTYPE DRIVE, RENO\"\n\
                   MA-L,nothex,Broken,x\n";
        let oui = Oui::parse(csv);
        assert_eq!(oui.len(), 2);
        assert_eq!(
            oui.vendor(&[0xf4, 0xbd, 0x9e, 1, 2, 3]),
            Some("Cisco Systems, Inc")
        );
        assert_eq!(oui.vendor(&[0x00, 0xd0, 0xef, 0, 0, 0]), Some("IGT"));
        assert_eq!(oui.vendor(&[0x00, 0xd0, 0xee, 0, 0, 0]), None);
        // Locally administered: no vendor even where the bytes would match one.
        assert_eq!(oui.vendor(&[0xf6, 0xbd, 0x9e, 1, 2, 3]), None);
    }

    /// Debian's file (scripts/setup.sh installs `ieee-data`).
    #[test]
    fn debians_registry_names_a_known_vendor() {
        let oui = Oui::load(Path::new(DEFAULT_PATH)).expect("ieee-data (scripts/setup.sh)");
        assert!(oui.len() > 20_000, "{}", oui.len());
        assert_eq!(
            oui.vendor(&[0xf4, 0xbd, 0x9e, 0, 0, 1]),
            Some("Cisco Systems, Inc")
        );
    }
}

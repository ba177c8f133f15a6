//! docker's rule for the names users give containers, networks and
//! volumes: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. One rule, so that a name valid
//! for one is valid for all, and none can hold a path separator.

pub fn is_valid(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 255
}

#[cfg(test)]
mod tests {
    #[test]
    fn dockers_rule() {
        for ok in ["web", "my-net", "a.b_c", "9lives"] {
            assert!(super::is_valid(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "../etc", "sp ace", "x:y"] {
            assert!(!super::is_valid(bad), "{bad:?}");
        }
    }
}

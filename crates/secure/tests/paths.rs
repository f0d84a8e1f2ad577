//! Default locations (the only test in this binary, since it changes the environment).

use std::path::PathBuf;

use ferry_secure::{default_known_hosts_path, default_state_dir};

#[test]
fn default_paths_follow_xdg_then_home() {
    std::env::set_var("HOME", "/home/u");
    std::env::remove_var("XDG_STATE_HOME");
    std::env::remove_var("XDG_CONFIG_HOME");
    assert_eq!(
        default_state_dir(),
        Some(PathBuf::from("/home/u/.local/state/ferry/tls"))
    );
    assert_eq!(
        default_known_hosts_path(),
        Some(PathBuf::from("/home/u/.config/ferry/known_hosts"))
    );
    std::env::set_var("XDG_STATE_HOME", "/s");
    std::env::set_var("XDG_CONFIG_HOME", "relative/is/ignored");
    assert_eq!(default_state_dir(), Some(PathBuf::from("/s/ferry/tls")));
    assert_eq!(
        default_known_hosts_path(),
        Some(PathBuf::from("/home/u/.config/ferry/known_hosts"))
    );
    std::env::remove_var("HOME");
    std::env::remove_var("XDG_STATE_HOME");
    std::env::remove_var("XDG_CONFIG_HOME");
    assert_eq!(default_state_dir(), None);
    assert_eq!(default_known_hosts_path(), None);
}

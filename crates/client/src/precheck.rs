//! Local errors are found locally: the files and folders named on the command line are
//! opened before anything connects, so that one the user cannot read is a usage error (exit
//! 2), never something the server is blamed for.

use std::fs::File;
use std::path::PathBuf;

use crate::error::ClientError;

/// Opens each regular file and folder among `paths` (`-` is standard input) and closes it
/// again; the first that cannot be opened (a folder: read) is the error. What a folder holds
/// is left to the walk, and special files are left alone: opening a FIFO would wait for a
/// writer.
pub(crate) fn named_files_readable(paths: &[PathBuf]) -> Result<(), ClientError> {
    for path in paths.iter().filter(|p| p.as_os_str() != "-") {
        let opened = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => File::open(path).map(drop),
            Ok(m) if m.is_dir() => std::fs::read_dir(path).map(drop),
            _ => Ok(()),
        };
        opened.map_err(|source| ClientError::LocalRead {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_special_paths_are_left_to_the_walk() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let paths = [
            file,
            tmp.path().to_owned(),
            tmp.path().join("missing"),
            PathBuf::from("-"),
        ];
        assert!(named_files_readable(&paths).is_ok());
    }
}

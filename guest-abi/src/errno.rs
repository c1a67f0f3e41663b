//! Xen error numbers (`public/errno.h`). Hypercalls return them negated.

/// A Xen error number. The discriminant is the positive value; hypercalls return `-value`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Errno {
    /// Operation not permitted.
    EPERM = 1,
    /// No such entry.
    ENOENT = 2,
    /// No such domain.
    ESRCH = 3,
    /// I/O error.
    EIO = 5,
    /// Argument list too long.
    E2BIG = 7,
    /// Exec format error.
    ENOEXEC = 8,
    /// Try again.
    EAGAIN = 11,
    /// Out of memory.
    ENOMEM = 12,
    /// Permission denied.
    EACCES = 13,
    /// Bad address (a guest pointer that cannot be accessed).
    EFAULT = 14,
    /// Busy (page-type conflict).
    EBUSY = 16,
    /// Already exists.
    EEXIST = 17,
    /// No such device.
    ENODEV = 19,
    /// Invalid argument.
    /// Is a directory.
    EISDIR = 21,
    EINVAL = 22,
    /// No space.
    ENOSPC = 28,
    /// Out of range.
    /// Read-only file system.
    EROFS = 30,
    ERANGE = 34,
    /// Function not implemented (unknown hypercall or sub-op).
    ENOSYS = 38,
    /// Directory not empty.
    ENOTEMPTY = 39,
    /// No data available (a vCPU without a context, for `getvcpucontext`).
    ENODATA = 61,
    /// Timer expired.
    ETIME = 62,
    /// Value too large.
    EOVERFLOW = 75,
    /// Internal: restart the hypercall (continuation).
    ERESTART = 85,
    /// Operation not supported.
    EOPNOTSUPP = 95,
    /// Already connected.
    EISCONN = 106,
}

impl Errno {
    /// The value a hypercall returns in RAX for this error.
    pub const fn to_ret(self) -> i64 {
        -(self as i64)
    }

    /// Decodes a negative hypercall return value.
    pub fn from_ret(ret: i64) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.to_ret() == ret)
    }

    const ALL: [Errno; 26] = {
        use Errno::*;
        [
            EPERM, ENOENT, ESRCH, EIO, E2BIG, ENOEXEC, EAGAIN, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST, ENODEV, EISDIR,
            EINVAL, ENOSPC, EROFS, ERANGE, ENOSYS, ENOTEMPTY, ENODATA, ETIME, EOVERFLOW, ERESTART, EOPNOTSUPP, EISCONN,
        ]
    };

    /// The symbolic name (what XenStore's error replies carry).
    pub fn name(self) -> &'static str {
        use Errno::*;
        match self {
            EPERM => "EPERM",
            ENOENT => "ENOENT",
            ESRCH => "ESRCH",
            EIO => "EIO",
            E2BIG => "E2BIG",
            ENOEXEC => "ENOEXEC",
            EAGAIN => "EAGAIN",
            ENOMEM => "ENOMEM",
            EACCES => "EACCES",
            EFAULT => "EFAULT",
            EBUSY => "EBUSY",
            EEXIST => "EEXIST",
            ENODEV => "ENODEV",
            EISDIR => "EISDIR",
            EINVAL => "EINVAL",
            ENOSPC => "ENOSPC",
            EROFS => "EROFS",
            ERANGE => "ERANGE",
            ENOSYS => "ENOSYS",
            ENOTEMPTY => "ENOTEMPTY",
            ENODATA => "ENODATA",
            ETIME => "ETIME",
            EOVERFLOW => "EOVERFLOW",
            ERESTART => "ERESTART",
            EOPNOTSUPP => "EOPNOTSUPP",
            EISCONN => "EISCONN",
        }
    }

    /// The error of a symbolic name.
    pub fn from_name(n: &str) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.name() == n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_xens() {
        assert_eq!(Errno::EFAULT.to_ret(), -14);
        assert_eq!(Errno::ENOSYS.to_ret(), -38);
        assert_eq!(Errno::EINVAL.to_ret(), -22);
        assert_eq!(Errno::EOPNOTSUPP as i64, 95);
        assert_eq!(Errno::from_ret(-22), Some(Errno::EINVAL));
        assert_eq!(Errno::from_ret(-4), None);
        assert_eq!(Errno::from_ret(0), None);
        for e in Errno::ALL {
            assert_eq!(Errno::from_name(e.name()), Some(e));
            assert_eq!(Errno::from_ret(e.to_ret()), Some(e));
        }
        assert_eq!(Errno::from_name("ENOTEMPTY"), Some(Errno::ENOTEMPTY));
    }
}

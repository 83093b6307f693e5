"""The pam_sm_* functions pam_entry.py uses when pam_module cannot be imported.

Only fail_closed and log_socket= are understood and nothing is recorded; one
line per PAM handle says why, as for other failures. Nothing is imported at the
top: whatever else in the package is broken, these still return the right code.
"""

PAM_SYSTEM_ERR = 4  # the values of constants.py, which may be the broken file
PAM_IGNORE = 25


def entry_points(reason: str) -> "dict[str, object]":
    reported = []  # per PAM handle: the script calls this once per handle

    def unavailable(pamh: object, flags: int, args: list[str]) -> int:
        refuse = "fail_closed" in args[1:]
        if not reported:
            reported.append(reason)
            log(reason, refuse, args)
        return PAM_SYSTEM_ERR if refuse else PAM_IGNORE

    def ignore(pamh: object, flags: int, args: list[str]) -> int:
        return PAM_IGNORE

    return {
        "pam_sm_acct_mgmt": unavailable,
        "pam_sm_open_session": unavailable,
        "pam_sm_close_session": ignore,  # closing never fails
        "pam_sm_setcred": ignore,
        "pam_sm_authenticate": ignore,
    }


def log(reason: str, refuse: bool, args: list[str]) -> None:
    path = next((a[len("log_socket=") :] for a in args[1:] if a.startswith("log_socket=")), "/dev/log")
    verdict = "login refused (fail_closed)" if refuse else "login goes on"
    try:
        from . import syslog
        from .constants import LOG_ERR

        syslog.log(LOG_ERR, "pam_python", f"pam_teleport_audit: cannot load: {reason}; {verdict}", path)
    except Exception:
        pass

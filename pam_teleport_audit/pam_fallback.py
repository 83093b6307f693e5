"""What pam_loader.py gives a PAM handle when pam_module.py cannot be imported.

Only fail_closed and log_socket= are understood and nothing is recorded; one
line per PAM handle says why. It imports nothing of ours, which may be what is
broken, and writes its line with _socket alone.
"""

PAM_SYSTEM_ERR = 4  # pam_module.py's values, which may be the broken file
PAM_IGNORE = 25
LOG_AUTHPRIV_ERR = (10 << 3) | 3


def entry_points(reason: str) -> "dict[str, object]":
    reported = []  # per PAM handle: pam_loader calls this once per handle

    def unavailable(pamh: object, flags: int, args: list[str]) -> int:
        refuse = "fail_closed" in args[1:]
        if not reported:
            reported.append(reason)
            log(reason, refuse, args)
        return PAM_SYSTEM_ERR if refuse else PAM_IGNORE

    # Closing a session never fails; pam_end has nothing to say.
    return {"pam_sm_acct_mgmt": unavailable, "pam_sm_open_session": unavailable}


def log(reason: str, refuse: bool, args: list[str]) -> None:
    """One datagram to the log socket (pam_module.syslog does more, but it may be what failed)."""
    path = next((a[len("log_socket=") :] for a in args[1:] if a.startswith("log_socket=")), "/dev/log")
    verdict = "login refused (fail_closed)" if refuse else "login goes on"
    line = f"<{LOG_AUTHPRIV_ERR}>pam_python: pam_teleport_audit: cannot load: {reason}; {verdict}"
    try:
        import _socket

        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            sock.settimeout(0.5)
            sock.sendto(line.replace("\n", " ").encode("utf-8", "replace"), path)
        finally:
            sock.close()
    except Exception:
        pass

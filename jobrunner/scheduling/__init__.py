"""When jobs run: due slots, the crontab block, the daemon, the watchdog."""

"""Worker processes for --workers N: the parent side (``parent``), the child's checks (``child``;
the process is ``greenmon.workerprocess``) and the messages between them (``messages``); the
parent never imports the child's engine."""

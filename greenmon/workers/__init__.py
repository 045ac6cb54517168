"""Worker processes for --workers N: the parent side (``parent``), the child process (``child``)
and the messages between them (``messages``); the parent never imports the child's engine."""

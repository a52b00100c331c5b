"""The forget-request record: its table, its statuses, reading one by ID. Every flow reads
it (subjects, registration, certificates, notifications); ``app.forgetting`` files and
runs the requests."""

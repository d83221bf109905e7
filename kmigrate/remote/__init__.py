"""The journal kept in the target Kintone: a *journal app* holding one marker record per
applied batch and a lease record (docs/journal.md, "The journal app").

    records   pure: the app's fields, marker keys, the marker request a bulk starts with,
              reading marker and lease records back
    app       ``JournalApp``: reads and writes of the journal app through a ``Client``
    lease     ``Lease``: runners take turns by revision compare-and-swap, with an expiry
    sync      the local SQLite journal brought up to date from the markers (and back)
    create    ``journal init``: the journal app made with Kintone's app admin APIs
"""

"""The toolkit every suite shares: the local stack's CLI today; target discovery, API
client, trace and metric queries, invariants and faults as the suites arrive."""

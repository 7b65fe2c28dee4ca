"""One isolated engine start (`runner`), the protocol searches use to ask for one (`executor`),
memory sampling and the guard (`monitor`), and process-group control (`process_group`)."""

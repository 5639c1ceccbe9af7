//! Many clusters at once: no collisions, all ready, all stopped.

use std::collections::HashSet;

use pgclone::server::TempCluster;

use crate::support::{self, execute, process_runs, query_text};

#[test]
fn twenty_clusters_start_concurrently_and_all_stop() {
    let root = support::unique_root("twenty");
    let clusters: Vec<TempCluster> = std::thread::scope(|scope| {
        let starts: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| TempCluster::builder().root(&root).start().unwrap()))
            .collect();
        starts.into_iter().map(|s| s.join().unwrap()).collect()
    });

    let sockets: HashSet<_> = clusters.iter().map(|c| c.server().socket_path()).collect();
    assert_eq!(sockets.len(), 20, "every cluster has its own socket");
    let dirs: HashSet<_> = clusters.iter().map(|c| c.data_dir()).collect();
    assert_eq!(dirs.len(), 20);
    for (i, cluster) in clusters.iter().enumerate() {
        let url = cluster.connection_string();
        execute(
            &url,
            &format!("create table marker as select '{i}'::text as v"),
        );
        assert_eq!(
            query_text(&url, "select v from marker"),
            i.to_string(),
            "each cluster is its own"
        );
    }

    let pids: Vec<u32> = clusters.iter().map(|c| c.server().pid()).collect();
    drop(clusters);
    assert!(
        pids.iter().all(|pid| !process_runs(*pid)),
        "all servers stopped"
    );
    assert_eq!(std::fs::read_dir(root.join("clones")).unwrap().count(), 0);
}

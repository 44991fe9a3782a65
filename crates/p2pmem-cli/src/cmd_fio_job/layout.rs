//! How the jobs of a fio job share the device: random jobs (or one job) cover the whole
//! region, sequential jobs get consecutive equal slices of whole requests through fio's
//! `size` and `offset_increment`, the workload of `p2pmem bench --jobs`. Pure arithmetic.

use super::JobSpec;
use serde::Serialize;

/// What each job of a fio job covers: fio's `size` and `offset_increment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JobLayout {
    /// fio's `size`: bytes each job covers; `None`: the whole device.
    pub job_size: Option<u64>,
    /// fio's `offset_increment`: where job `i` starts is `i` times this; `None`: every
    /// job starts at 0.
    pub offset_increment: Option<u64>,
    /// Bytes at the end of the region no sequential job reaches (fewer than one request
    /// per job; `p2pmem bench` gives them to its first jobs).
    pub unreached: u64,
}

/// How the jobs share the region of `region` bytes (`None`: unknown, the whole device):
/// random jobs, or a single one, cover all of it; sequential jobs get consecutive equal
/// slices of whole requests, as `p2pmem bench --jobs` does. The error says what to change.
pub fn layout(spec: &JobSpec, region: Option<u64>) -> Result<JobLayout, String> {
    if spec.rw.random() || spec.numjobs <= 1 {
        return Ok(JobLayout {
            job_size: spec.size,
            offset_increment: None,
            unreached: 0,
        });
    }
    let Some(region) = region else {
        return Err(format!(
            "the size of the device is unknown, so its {} sequential jobs cannot be given \
             their slices: give --size",
            spec.numjobs
        ));
    };
    let requests = region / spec.bs;
    let per_job = requests / u64::from(spec.numjobs);
    if per_job == 0 {
        return Err(format!(
            "the region of {region} bytes holds {requests} request(s) of {} bytes, fewer than \
             the {} sequential jobs (each walks its own slice): lower --numjobs or --bs, or \
             give a larger --size",
            spec.bs, spec.numjobs
        ));
    }
    let slice = per_job * spec.bs;
    Ok(JobLayout {
        job_size: Some(slice),
        offset_increment: Some(slice),
        unreached: region - slice * u64::from(spec.numjobs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd_fio_job::tests::spec;
    use p2pmem_linux::bench::Rw;

    #[test]
    fn sequential_jobs_get_equal_slices_random_ones_the_whole_region() {
        let mut s = spec(4096, 8, 4);
        // 1 MiB for 4 sequential jobs: 256 KiB each, at 0, 256K, 512K, 768K.
        let l = layout(&s, Some(1 << 20)).unwrap();
        assert_eq!(
            l,
            JobLayout {
                job_size: Some(256 << 10),
                offset_increment: Some(256 << 10),
                unreached: 0
            }
        );
        // 259 requests for 4 jobs: 64 each, 3 left out (bench gives them to jobs 0-2).
        let l = layout(&s, Some(259 * 4096)).unwrap();
        assert_eq!(l.job_size, Some(64 * 4096));
        assert_eq!(l.unreached, 3 * 4096);
        assert!(layout(&s, Some(3 * 4096))
            .unwrap_err()
            .contains("fewer than the 4"));
        assert!(layout(&s, None).unwrap_err().contains("give --size"));
        // Random jobs, and one job: fio's size is the region as given.
        s.size = Some(1 << 30);
        s.rw = Rw::RandRead;
        let l = layout(&s, Some(1 << 30)).unwrap();
        assert_eq!((l.job_size, l.offset_increment), (Some(1 << 30), None));
        let one = JobSpec {
            rw: Rw::Read,
            numjobs: 1,
            size: None,
            ..s
        };
        assert_eq!(
            layout(&one, None).unwrap(),
            JobLayout {
                job_size: None,
                offset_increment: None,
                unreached: 0
            }
        );
    }
}

//! Prints the DataStream CRD as YAML; `crds/datastream.yaml` is this output, committed.
use kube::CustomResourceExt;

fn main() {
    print!("{}", serde_yaml::to_string(&streamfabric_api::crd::DataStream::crd()).expect("the CRD serializes"));
}

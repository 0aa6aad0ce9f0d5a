// impl.hpp — internal: the constructors make_datastore() dispatches to.
#pragma once

#include "felix/datastore/datastore.hpp"

namespace tabby::felix::ds {

Result<std::unique_ptr<Datastore>> make_file_datastore(boost::asio::io_context& io, const DatastoreConfig& cfg);
Result<std::unique_ptr<Datastore>> make_etcd_datastore(boost::asio::io_context& io, const DatastoreConfig& cfg);
Result<std::unique_ptr<Datastore>> make_kubernetes_datastore(boost::asio::io_context& io, const DatastoreConfig& cfg);

}  // namespace tabby::felix::ds

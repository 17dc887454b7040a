"""Kafka: the embedded broker, topic creation, the topics' codecs, ``ingest``'s producer, and (in one
module) every use of Faust's and aiokafka's private internals."""

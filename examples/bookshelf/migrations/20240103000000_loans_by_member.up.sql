create index loans_by_member on loans (member_id) where returned_on is null;
